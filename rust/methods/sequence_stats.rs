//! Exact statistics of a sequence world's policy (`rlhf_fast.sequences`), O(P·L·V): a
//! response to prompt `p` draws `a_t ~ pi_t = softmax(theta[p, t])` until its first EOS (token
//! 0) or `L` tokens. With `alive_0 = 1`, `alive_{t+1} = alive_t (1 - pi_t(EOS))`: expected
//! length `sum_t alive_t` (the EOS included), content length `sum_t alive_{t+1}`, sequence KL
//! `sum_t alive_t KL(pi_t || ref_t)`, expected copies of `v` `sum_t alive_t pi_t(v)` and the
//! chance `v` appears, `1 - sum_t q_t pi_t(EOS) - q_L` with `q_0 = 1`, `q_{t+1} = q_t (1 -
//! pi_t(EOS) - pi_t(v))`. Column 0 of the counts and of the appearances is the chance of an
//! EOS, `1 - alive_L`.

use crate::error::{finite_slice, vec_with_capacity, Error, Result};
use crate::kernels::softmax::log_softmax_row;

const EOS: usize = 0;

/// One prompt's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptStats {
    /// `alive_0 .. alive_L`.
    pub alive: Vec<f64>,
    pub length: f64,
    pub content_length: f64,
    pub kl: f64,
    pub counts: Vec<f64>,
    pub appears: Vec<f64>,
}

/// The statistics of one prompt's policy rows `logits` (`[L, V]`, row-major, finite) against
/// the reference's log-probabilities `ref_log_probs` (same shape).
pub fn prompt_stats(logits: &[f64], ref_log_probs: &[f64], vocab: usize) -> PromptStats {
    let max_len = logits.len() / vocab;
    let mut alive = vec![1.0; max_len + 1];
    let mut counts = vec![0.0; vocab];
    let mut stays = vec![1.0; vocab];
    let mut never = vec![0.0; vocab];
    let (mut log_p, mut p) = (vec![0.0; vocab], vec![0.0; vocab]);
    let (mut length, mut kl) = (0.0, 0.0);
    for t in 0..max_len {
        let row = t * vocab..(t + 1) * vocab;
        log_softmax_row(&logits[row.clone()], &mut log_p);
        for (pv, &lp) in p.iter_mut().zip(&log_p) {
            *pv = lp.exp();
        }
        let (eos, now) = (p[EOS], alive[t]);
        length += now;
        let mut kl_t = 0.0;
        // a token of probability 0 adds nothing (its log-probability may be -inf)
        for ((&pv, &lp), &lq) in p.iter().zip(&log_p).zip(&ref_log_probs[row]) {
            if pv > 0.0 {
                kl_t += pv * (lp - lq);
            }
        }
        kl += now * f64::max(kl_t, 0.0);
        for v in 0..vocab {
            counts[v] += now * p[v];
            never[v] += stays[v] * eos;
            stays[v] *= f64::max(1.0 - eos - p[v], 0.0);
        }
        alive[t + 1] = now * (1.0 - eos);
    }
    let ended = 1.0 - alive[max_len];
    let mut appears: Vec<f64> = never.iter().zip(&stays).map(|(&n, &q)| (1.0 - (n + q)).clamp(0.0, 1.0)).collect();
    appears[EOS] = ended;
    counts[EOS] = ended;
    let content_length = alive[1..].iter().sum();
    PromptStats { alive, length, content_length, kl, counts, appears }
}

/// Every prompt's statistics: `logits` and `ref_logits` `[P, L, V]`, row-major, finite.
pub fn sequence_stats(logits: &[f64], ref_logits: &[f64], shape: [usize; 3]) -> Result<Vec<PromptStats>> {
    let [n_prompts, max_len, vocab] = shape;
    if n_prompts == 0 || max_len == 0 || vocab < 2 {
        return Err(Error::invalid(format!(
            "logits must have at least 1 prompt, 1 position and 2 tokens, got shape {shape:?}"
        )));
    }
    let size = n_prompts.checked_mul(max_len).and_then(|n| n.checked_mul(vocab));
    for (name, values) in [("logits", logits), ("ref_logits", ref_logits)] {
        if size != Some(values.len()) {
            return Err(Error::invalid(format!("{name} must hold {shape:?} floats, got {}", values.len())));
        }
        finite_slice(name, values)?;
    }
    let block = max_len * vocab;
    let mut ref_log_probs = vec_with_capacity(block, "the reference's log-probabilities")?;
    ref_log_probs.resize(block, 0.0);
    let mut out = vec_with_capacity(n_prompts, "the statistics")?;
    for x in 0..n_prompts {
        let rows = x * block..(x + 1) * block;
        for (row, out) in ref_logits[rows.clone()].chunks(vocab).zip(ref_log_probs.chunks_mut(vocab)) {
            log_softmax_row(row, out);
        }
        out.push(prompt_stats(&logits[rows], &ref_log_probs, vocab));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every response of a `[L, V]` policy: (tokens, probability).
    fn responses(p: &[Vec<f64>]) -> Vec<(Vec<usize>, f64)> {
        let mut done = Vec::new();
        let mut open = vec![(Vec::new(), 1.0)];
        for row in p {
            let mut next = Vec::new();
            for (tokens, q) in open {
                for (a, &pa) in row.iter().enumerate() {
                    let grown = [tokens.clone(), vec![a]].concat();
                    if a == EOS {
                        done.push((grown, q * pa));
                    } else {
                        next.push((grown, q * pa));
                    }
                }
            }
            open = next;
        }
        done.extend(open);
        done
    }

    #[test]
    fn the_statistics_are_sums_over_every_response() {
        let (max_len, vocab) = (3, 3);
        let logits = [0.3, -0.2, 0.9, -1.0, 0.5, 0.1, 0.7, 0.0, -0.4];
        let reference = [0.0, 0.2, -0.3, 0.4, 0.0, 0.1, -0.2, 0.3, 0.0];
        let stats = &sequence_stats(&logits, &reference, [1, max_len, vocab]).unwrap()[0];
        let rows = |z: &[f64]| {
            z.chunks(vocab)
                .map(|row| {
                    let mut out = vec![0.0; vocab];
                    log_softmax_row(row, &mut out);
                    out
                })
                .collect::<Vec<_>>()
        };
        let (log_p, log_q) = (rows(&logits), rows(&reference));
        let p: Vec<Vec<f64>> = log_p.iter().map(|row| row.iter().map(|v| v.exp()).collect()).collect();
        let (mut length, mut content, mut kl) = (0.0, 0.0, 0.0);
        let (mut counts, mut appears) = (vec![0.0; vocab], vec![0.0; vocab]);
        for (tokens, q) in responses(&p) {
            length += q * tokens.len() as f64;
            content += q * tokens.iter().filter(|&&a| a != EOS).count() as f64;
            kl += q * tokens.iter().enumerate().map(|(t, &a)| log_p[t][a] - log_q[t][a]).sum::<f64>();
            for v in 0..vocab {
                let copies = tokens.iter().filter(|&&a| a == v).count();
                counts[v] += q * copies as f64;
                appears[v] += if copies > 0 { q } else { 0.0 };
            }
        }
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(stats.length, length) && close(stats.content_length, content) && close(stats.kl, kl));
        for v in 0..vocab {
            assert!(close(stats.counts[v], counts[v]) && close(stats.appears[v], appears[v]), "token {v}");
        }
    }

    #[test]
    fn the_reference_has_no_kl_and_bad_shapes_are_refused() {
        let logits = [0.0, 1.0, 2.0, 0.5];
        let stats = sequence_stats(&logits, &logits, [1, 2, 2]).unwrap();
        assert_eq!(stats[0].kl, 0.0);
        assert_eq!(stats[0].alive.len(), 3);
        let err = sequence_stats(&logits, &logits[..3], [1, 2, 2]).unwrap_err().to_string();
        assert_eq!(err, "ref_logits must hold [1, 2, 2] floats, got 3");
        assert!(sequence_stats(&[f64::NAN; 4], &logits, [1, 2, 2]).is_err());
        assert!(sequence_stats(&logits, &logits, [1, 4, 1]).is_err());
    }
}
