//! GRPO (Shao et al. 2024) on one prompt's logits, as METHODS.md section 3 writes it: `G`
//! sampled tokens per step, group-normalised advantages (TRL's `scale_rewards`), the
//! clipped surrogate (DAPO's `epsilon_high`), and the `k3` KL to the reference in the loss.

use crate::error::{
    at_most, finite_slice, first_nonfinite, non_negative, overflowed, positive, py_float, record_overflowed,
    vec_with_capacity, Error, Result,
};
use crate::kernels::sampling::{running_sums, sample_running};
use crate::kernels::softmax::{log_softmax_row, softmax_row};

/// Largest `num_generations`: a step's group (and its scratch) stays small.
pub const MAX_NUM_GENERATIONS: i64 = 65536;
/// Largest `num_iterations`: a step's work stays bounded.
pub const MAX_NUM_ITERATIONS: i64 = 10_000;

/// Added to the group's std before dividing by it (TRL's `1e-4`): a group whose rewards are
/// all equal gets zero advantages instead of a division by zero.
pub const GROUP_STD_EPS: f64 = 1e-4;

/// TRL's `scale_rewards`: divide the centred rewards by the group's std, or not (Dr. GRPO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleRewards {
    Group,
    None,
}

impl ScaleRewards {
    /// The values `scale_rewards` takes.
    pub const NAMES: [&'static str; 2] = ["group", "none"];

    pub fn name(self) -> &'static str {
        match self {
            ScaleRewards::Group => "group",
            ScaleRewards::None => "none",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "group" => Ok(ScaleRewards::Group),
            "none" => Ok(ScaleRewards::None),
            other => Err(Error::invalid(format!("scale_rewards must be one of ('group', 'none'), got '{other}'"))),
        }
    }
}

/// The hyper-parameters of a GRPO step, checked once (TRL's names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpoParams {
    pub num_generations: usize,
    pub beta: f64,
    pub epsilon: f64,
    pub epsilon_high: f64,
    pub lr: f64,
    pub scale_rewards: ScaleRewards,
    pub num_iterations: u32,
}

impl GrpoParams {
    /// `2 <= num_generations <= 65536`, `beta >= 0`, `epsilon > 0`, `epsilon_high > 0`
    /// (`None`: `epsilon`), `lr > 0`, `1 <= num_iterations <= 10000`.
    pub fn new(
        num_generations: i64,
        beta: f64,
        epsilon: f64,
        epsilon_high: Option<f64>,
        lr: f64,
        scale_rewards: ScaleRewards,
        num_iterations: i64,
    ) -> Result<Self> {
        if num_generations < 2 {
            return Err(Error::invalid(format!("num_generations must be >= 2, got {num_generations}")));
        }
        at_most("num_generations", num_generations, MAX_NUM_GENERATIONS)?;
        if num_iterations < 1 {
            return Err(Error::invalid(format!("num_iterations must be >= 1, got {num_iterations}")));
        }
        at_most("num_iterations", num_iterations, MAX_NUM_ITERATIONS)?;
        let epsilon = positive("epsilon", epsilon)?;
        Ok(GrpoParams {
            num_generations: num_generations as usize,
            beta: non_negative("beta", beta)?,
            epsilon,
            epsilon_high: match epsilon_high {
                Some(value) => positive("epsilon_high", value)?,
                None => epsilon,
            },
            lr: positive("lr", lr)?,
            scale_rewards,
            num_iterations: num_iterations as u32,
        })
    }
}

/// What one GRPO step did: the group's mean reward and its std, the exact KL of the policy
/// before the step, the clipped share of (sample, iteration) terms and the loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpoOutcome {
    pub score: f64,
    pub reward_std: f64,
    pub kl: f64,
    pub clip_frac: f64,
    pub loss: f64,
}

impl GrpoOutcome {
    /// The first recorded float that is not finite, by its key: `grpo_step`'s record order
    /// (score, reward_std, kl, clip_frac, loss), then a run's running `mean_kl` where
    /// `train_grpo`'s history has it.
    #[inline]
    pub fn nonfinite_key(&self, mean_kl: Option<f64>) -> Option<&'static str> {
        first_nonfinite([
            ("score", self.score),
            ("reward_std", self.reward_std),
            ("kl", self.kl),
            ("clip_frac", self.clip_frac),
            ("loss", self.loss),
            ("mean_kl", mean_kl.unwrap_or(0.0)),
        ])
    }
}

/// Scratch a step reuses; after a step, [`GrpoScratch::tokens`] holds its sampled tokens.
#[derive(Clone, Debug)]
pub struct GrpoScratch {
    p_old: Vec<f64>,
    /// `ln p_old`, shared by the KL monitor and the first iteration's `k3` terms.
    ln_p_old: Vec<f64>,
    cumulative: Vec<f64>,
    p: Vec<f64>,
    grad: Vec<f64>,
    /// Per token of this step's group: `log(q(a) / pi(a))` and its exponential.
    log_ratio: Vec<f64>,
    ratio_q: Vec<f64>,
    in_group: Vec<bool>,
    tokens: Vec<usize>,
    advantages: Vec<f64>,
}

impl GrpoScratch {
    /// Scratch for a vocabulary of `vocab_size` and groups of `num_generations`, or
    /// [`Error::OutOfMemory`] if the group's rows cannot be allocated.
    pub fn new(vocab_size: usize, num_generations: usize) -> Result<Self> {
        let mut tokens = vec_with_capacity(num_generations, "the GRPO group")?;
        tokens.resize(num_generations, 0);
        let mut advantages = vec_with_capacity(num_generations, "the GRPO group")?;
        advantages.resize(num_generations, 0.0);
        Ok(GrpoScratch {
            p_old: vec![0.0; vocab_size],
            ln_p_old: vec![0.0; vocab_size],
            cumulative: vec![0.0; vocab_size],
            p: vec![0.0; vocab_size],
            grad: vec![0.0; vocab_size],
            log_ratio: vec![0.0; vocab_size],
            ratio_q: vec![0.0; vocab_size],
            in_group: vec![false; vocab_size],
            tokens,
            advantages,
        })
    }

    /// The tokens the last step sampled, in draw order.
    pub(crate) fn tokens(&self) -> &[usize] {
        &self.tokens
    }
}

/// `log(v)` with libm's `-inf` at 0 (the reference's `_log`).
#[inline(always)]
fn ln(v: f64) -> f64 {
    v.ln()
}

/// One GRPO step, unchecked. `uniforms` are the step's `G` draws of `rng.random()`, in
/// order; `ref_log_probs` the frozen reference's log-softmax for the prompt; `weights[a]`
/// the reward of token `a`. Mutates `logits`; the scratch must be sized for `logits.len()`
/// and `params.num_generations`, which must equal `uniforms.len()`.
///
/// The arithmetic is the reference's, operation for operation; values the reference
/// recomputes from the same inputs are computed once (the first iteration's softmax is
/// `p_old`, its `ln pi(a)` the KL's, and `exp(log q(a) - ln pi(a))` is the same for every
/// sample of a token), which changes no bit.
pub fn grpo_update(
    logits: &mut [f64],
    ref_log_probs: &[f64],
    weights: &[f64],
    uniforms: &[f64],
    params: &GrpoParams,
    scratch: &mut GrpoScratch,
) -> GrpoOutcome {
    let GrpoScratch { p_old, ln_p_old, cumulative, p, grad, log_ratio, ratio_q, in_group, tokens, advantages } =
        scratch;
    let rows = Rows { p_old, ln_p_old, cumulative, p, grad, log_ratio, ratio_q, in_group };
    if logits.len() == 8 {
        // The lesson's vocabulary: the same code with every row's length a constant, so the
        // row loops unroll (no arithmetic changes).
        grpo_core(
            &mut logits[..8],
            &ref_log_probs[..8],
            &weights[..8],
            uniforms,
            params,
            rows.prefix(8),
            tokens,
            advantages,
        )
    } else {
        grpo_core(logits, ref_log_probs, weights, uniforms, params, rows, tokens, advantages)
    }
}

/// The per-token rows of [`GrpoScratch`], borrowed together.
struct Rows<'a> {
    p_old: &'a mut [f64],
    ln_p_old: &'a mut [f64],
    cumulative: &'a mut [f64],
    p: &'a mut [f64],
    grad: &'a mut [f64],
    log_ratio: &'a mut [f64],
    ratio_q: &'a mut [f64],
    in_group: &'a mut [bool],
}

impl<'a> Rows<'a> {
    #[inline(always)]
    fn prefix(self, v: usize) -> Rows<'a> {
        Rows {
            p_old: &mut self.p_old[..v],
            ln_p_old: &mut self.ln_p_old[..v],
            cumulative: &mut self.cumulative[..v],
            p: &mut self.p[..v],
            grad: &mut self.grad[..v],
            log_ratio: &mut self.log_ratio[..v],
            ratio_q: &mut self.ratio_q[..v],
            in_group: &mut self.in_group[..v],
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grpo_core(
    logits: &mut [f64],
    ref_log_probs: &[f64],
    weights: &[f64],
    uniforms: &[f64],
    params: &GrpoParams,
    rows: Rows<'_>,
    tokens: &mut [usize],
    advantages: &mut [f64],
) -> GrpoOutcome {
    let Rows { p_old, ln_p_old, cumulative, p, grad, log_ratio, ratio_q, in_group } = rows;
    let g_f = params.num_generations as f64;
    softmax_row(logits, p_old);
    running_sums(p_old, cumulative);
    in_group.iter_mut().for_each(|seen| *seen = false);
    for (token, &u) in tokens.iter_mut().zip(uniforms) {
        *token = sample_running(cumulative, u);
        in_group[*token] = true;
    }
    let mut total = 0.0;
    for &a in tokens.iter() {
        total += weights[a];
    }
    let mean = total / g_f;
    let mut squares = 0.0;
    for &a in tokens.iter() {
        let d = weights[a] - mean;
        squares += d * d;
    }
    let std = (squares / (g_f - 1.0)).sqrt();
    for (adv, &a) in advantages.iter_mut().zip(tokens.iter()) {
        *adv = match params.scale_rewards {
            ScaleRewards::Group => (weights[a] - mean) / (std + GROUP_STD_EPS),
            ScaleRewards::None => weights[a] - mean,
        };
    }
    // The exact KL(p_old || q) from log q, as `kl_to_log` sums it.
    let mut kl = 0.0;
    for ((&pi, ln_pi), &ln_qi) in p_old.iter().zip(ln_p_old.iter_mut()).zip(ref_log_probs) {
        *ln_pi = ln(pi);
        if pi > 0.0 {
            kl += pi * (*ln_pi - ln_qi);
        }
    }

    let (upper, lower) = (1.0 + params.epsilon_high, 1.0 - params.epsilon);
    let mut clipped = 0u64;
    let mut loss = 0.0;
    for iteration in 0..params.num_iterations {
        if iteration == 0 {
            p.copy_from_slice(p_old); // softmax of the same logits
        } else {
            softmax_row(logits, p);
        }
        for a in 0..p.len() {
            if in_group[a] {
                let ln_pa = if iteration == 0 { ln_p_old[a] } else { ln(p[a]) };
                log_ratio[a] = ref_log_probs[a] - ln_pa; // log(q(a) / pi(a))
                ratio_q[a] = log_ratio[a].exp();
            }
        }
        grad.iter_mut().for_each(|v| *v = 0.0);
        let mut loss_sum = 0.0;
        for (&a, &adv) in tokens.iter().zip(advantages.iter()) {
            // In the first iteration p is p_old: x / x is exactly 1 for x > 0 (a sampled
            // token's probability), and the division is kept for any other x.
            let ratio = if iteration == 0 && p_old[a] > 0.0 { 1.0 } else { p[a] / p_old[a] };
            // `&` and `|`, not `&&` and `||`: the advantage's sign is a coin flip per sample.
            let flat = ((adv >= 0.0) & (ratio > upper)) | ((adv < 0.0) & (ratio < lower));
            clipped += u64::from(flat);
            let mut coef = if flat { 0.0 } else { -adv * ratio };
            coef += params.beta * (1.0 - ratio_q[a]); // d(beta * k3) / d log pi(a)
            if iteration == 0 {
                let clipped_ratio = ratio.max(lower).min(upper);
                let k3 = ratio_q[a] - log_ratio[a] - 1.0;
                loss_sum += -(ratio * adv).min(clipped_ratio * adv) + params.beta * k3;
            }
            for (j, (gj, &pj)) in grad.iter_mut().zip(p.iter()).enumerate() {
                *gj += coef * (if j == a { 1.0 } else { 0.0 } - pj);
            }
        }
        if iteration == 0 {
            loss = loss_sum / g_f;
        }
        for (logit, &gj) in logits.iter_mut().zip(grad.iter()) {
            *logit -= params.lr * gj / g_f;
        }
    }
    GrpoOutcome {
        score: mean,
        reward_std: std,
        kl,
        clip_frac: clipped as f64 / (g_f * f64::from(params.num_iterations)),
        loss,
    }
}

/// Checked [`grpo_update`] from the reference's logits; returns the outcome and the tokens.
/// Mutates `logits` only when every argument is valid, the step leaves them within bounds
/// and its record is finite (else an error naming `lr` and `beta`, the logits left as they
/// were).
pub fn grpo_step(
    logits: &mut [f64],
    ref_logits: &[f64],
    weights: &[f64],
    uniforms: &[f64],
    params: &GrpoParams,
) -> Result<(GrpoOutcome, Vec<usize>)> {
    finite_slice("theta", logits)?;
    finite_slice("ref", ref_logits)?;
    finite_slice("w", weights)?;
    if ref_logits.len() != logits.len() || weights.len() != logits.len() {
        return Err(Error::invalid(format!(
            "theta, ref and w must cover the same {} tokens, got {}, {} and {}",
            logits.len(),
            logits.len(),
            ref_logits.len(),
            weights.len()
        )));
    }
    if uniforms.len() != params.num_generations {
        return Err(Error::invalid(format!(
            "need {} uniform draws (num_generations), got {}",
            params.num_generations,
            uniforms.len()
        )));
    }
    for (i, &u) in uniforms.iter().enumerate() {
        if !(0.0..1.0).contains(&u) {
            return Err(Error::invalid(format!("rng.random() must lie in [0, 1), draw {i} was {}", py_float(u))));
        }
    }
    let mut logq = vec![0.0; logits.len()];
    log_softmax_row(ref_logits, &mut logq);
    let mut scratch = GrpoScratch::new(logits.len(), params.num_generations)?;
    let mut updated = logits.to_vec();
    let out = grpo_update(&mut updated, &logq, weights, uniforms, params, &mut scratch);
    if overflowed(&updated) {
        return Err(Error::Diverged(format!(
            "grpo_step diverged: logits overflowed (lr={}, beta={})",
            py_float(params.lr),
            py_float(params.beta)
        )));
    }
    if let Some(key) = out.nonfinite_key(None) {
        return Err(record_overflowed("grpo_step diverged", key, params.lr, params.beta));
    }
    logits.copy_from_slice(&updated);
    Ok((out, scratch.tokens))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::kl::kl_to_log;
    use crate::kernels::sampling::sample_index;
    use crate::kernels::softmax::{log_softmax_row, softmax};
    use crate::rng::Mt19937;

    const WEIGHTS: [f64; 8] = [1.5, 1.5, -1.6, -1.5, 1.6, 1.6, -1.5, -1.5];

    fn params(g: i64, beta: f64, eps: f64, eps_high: Option<f64>, scale: ScaleRewards, iters: i64) -> GrpoParams {
        GrpoParams::new(g, beta, eps, eps_high, 1e-4, scale, iters).unwrap()
    }

    /// The GRPO loss of METHODS.md at `logits`, for fixed tokens, advantages and `p_old`.
    fn loss(logits: &[f64], logq: &[f64], p_old: &[f64], tokens: &[usize], adv: &[f64], p: &GrpoParams) -> f64 {
        let pi = softmax(logits).unwrap();
        let mut total = 0.0;
        for (&a, &adv) in tokens.iter().zip(adv) {
            let ratio = pi[a] / p_old[a];
            let clipped = ratio.max(1.0 - p.epsilon).min(1.0 + p.epsilon_high);
            let d = logq[a] - pi[a].ln();
            total += -(ratio * adv).min(clipped * adv) + p.beta * (d.exp() - d - 1.0);
        }
        total / tokens.len() as f64
    }

    #[test]
    fn grpo_step_refuses_a_record_that_is_not_finite_and_leaves_the_logits() {
        let weights = [1e300, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0];
        let p = GrpoParams::new(2, 0.04, 0.2, None, 0.05, ScaleRewards::Group, 1).unwrap();
        let mut logits = [0.5; 8];
        let err = grpo_step(&mut logits, &[0.0; 8], &weights, &[0.01, 0.9], &p).unwrap_err();
        assert_eq!(err, Error::Diverged("grpo_step diverged: reward_std overflowed (lr=0.05, beta=0.04)".into()));
        assert_eq!(logits, [0.5; 8]);
        assert!(grpo_step(&mut logits, &[0.0; 8], &weights, &[0.9, 0.9], &p).is_ok());
    }

    #[test]
    fn the_step_descends_the_loss_it_reports() {
        let theta = [0.3, -0.2, 0.8, 0.0, -0.5, 0.1, 0.4, -0.3];
        let reference = [0.1, 0.0, -0.2, 0.3, 0.0, -0.1, 0.2, 0.0];
        let mut logq = [0.0; 8];
        log_softmax_row(&reference, &mut logq);
        let uniforms = [0.05, 0.9, 0.33, 0.61, 0.12, 0.47, 0.78, 0.25];
        for (beta, scale) in [(0.04, ScaleRewards::Group), (0.5, ScaleRewards::None), (0.0, ScaleRewards::Group)] {
            let p = params(8, beta, 0.2, None, scale, 1);
            let mut stepped = theta;
            let (out, tokens) = grpo_step(&mut stepped, &reference, &WEIGHTS, &uniforms, &p).unwrap();
            // The advantages the step used, rebuilt from its tokens.
            let rewards: Vec<f64> = tokens.iter().map(|&a| WEIGHTS[a]).collect();
            let adv: Vec<f64> = rewards
                .iter()
                .map(|r| {
                    if scale == ScaleRewards::Group {
                        (r - out.score) / (out.reward_std + GROUP_STD_EPS)
                    } else {
                        r - out.score
                    }
                })
                .collect();
            let p_old = softmax(&theta).unwrap();
            assert!((out.loss - loss(&theta, &logq, &p_old, &tokens, &adv, &p)).abs() < 1e-14);
            for j in 0..8 {
                let h = 1e-6;
                let (mut up, mut down) = (theta, theta);
                up[j] += h;
                down[j] -= h;
                let fd = (loss(&up, &logq, &p_old, &tokens, &adv, &p) - loss(&down, &logq, &p_old, &tokens, &adv, &p))
                    / (2.0 * h);
                let moved = stepped[j] - theta[j];
                assert!((moved + p.lr * fd).abs() < 1e-11, "beta={beta} j={j}: {moved} vs {}", -p.lr * fd);
            }
        }
    }

    #[test]
    fn later_iterations_follow_the_gradient_inside_the_clip_region() {
        // After one update the ratios move off 1; the second iteration's gradient is the
        // loss gradient at the moved logits (still inside the region for a small step).
        let theta = [0.3, -0.2, 0.8, 0.0, -0.5, 0.1, 0.4, -0.3];
        let reference = [0.0; 8];
        let mut logq = [0.0; 8];
        log_softmax_row(&reference, &mut logq);
        let uniforms = [0.05, 0.9, 0.33, 0.61];
        let p = params(4, 0.1, 0.2, Some(0.28), ScaleRewards::Group, 2);
        let one = GrpoParams { num_iterations: 1, ..p };
        let (mut once, mut twice) = (theta, theta);
        let (out1, tokens) = grpo_step(&mut once, &reference, &WEIGHTS, &uniforms, &one).unwrap();
        let (out2, _) = grpo_step(&mut twice, &reference, &WEIGHTS, &uniforms, &p).unwrap();
        assert_eq!(out1.loss, out2.loss); // recorded at the first iteration
        let rewards: Vec<f64> = tokens.iter().map(|&a| WEIGHTS[a]).collect();
        let adv: Vec<f64> = rewards.iter().map(|r| (r - out1.score) / (out1.reward_std + GROUP_STD_EPS)).collect();
        let p_old = softmax(&theta).unwrap();
        for j in 0..8 {
            let h = 1e-6;
            let (mut up, mut down) = (once, once);
            up[j] += h;
            down[j] -= h;
            let fd = (loss(&up, &logq, &p_old, &tokens, &adv, &p) - loss(&down, &logq, &p_old, &tokens, &adv, &p))
                / (2.0 * h);
            assert!(((twice[j] - once[j]) + p.lr * fd).abs() < 1e-11, "j={j}");
        }
    }

    #[test]
    fn clipped_terms_keep_only_the_kl_gradient() {
        // A huge step in the first iteration pushes every ratio out of the region.
        let reference = [0.0; 8];
        let uniforms = [0.01, 0.3, 0.6, 0.99];
        let p = GrpoParams::new(4, 0.0, 0.01, None, 50.0, ScaleRewards::Group, 3).unwrap();
        let mut theta = [0.0; 8];
        let (out, tokens) = grpo_step(&mut theta, &reference, &WEIGHTS, &uniforms, &p).unwrap();
        assert_eq!(tokens, vec![0, 2, 4, 7]);
        assert_eq!(out.clip_frac, 8.0 / 12.0); // iterations 2 and 3 fully clipped, beta = 0
        assert_eq!(out.kl, 0.0);
        assert!((out.score - (1.5 - 1.6 + 1.6 - 1.5) / 4.0).abs() < 1e-15);
    }

    #[test]
    fn equal_rewards_give_zero_advantages_and_a_kl_only_update() {
        let reference = [0.0; 8];
        let mut theta = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let p = GrpoParams::new(3, 0.1, 0.2, None, 0.1, ScaleRewards::Group, 1).unwrap();
        let (out, tokens) = grpo_step(&mut theta, &reference, &WEIGHTS, &[0.0, 0.01, 0.05], &p).unwrap();
        assert_eq!(tokens, vec![0, 0, 0]);
        assert_eq!(out.reward_std, 0.0);
        assert!(theta[0] < 0.5, "the KL term pulls the sampled token's logit back to the reference");
    }

    /// METHODS.md section 3 written out literally, as the reference writes it.
    fn literal_step(
        logits: &mut [f64],
        logq: &[f64],
        w: &[f64],
        uniforms: &[f64],
        p: &GrpoParams,
    ) -> (Vec<usize>, [f64; 5]) {
        let g = p.num_generations;
        let p_old = softmax(logits).unwrap();
        let tokens: Vec<usize> = uniforms.iter().map(|&u| sample_index(&p_old, u)).collect();
        let rewards: Vec<f64> = tokens.iter().map(|&a| w[a]).collect();
        let mut total = 0.0;
        for r in &rewards {
            total += r;
        }
        let mean = total / g as f64;
        let mut squares = 0.0;
        for r in &rewards {
            squares += (r - mean) * (r - mean);
        }
        let std = (squares / (g as f64 - 1.0)).sqrt();
        let adv: Vec<f64> = rewards
            .iter()
            .map(|r| if p.scale_rewards == ScaleRewards::Group { (r - mean) / (std + GROUP_STD_EPS) } else { r - mean })
            .collect();
        let kl = kl_to_log(&p_old, logq);
        let (mut clipped, mut loss) = (0, 0.0);
        for iteration in 0..p.num_iterations {
            let mut pi = vec![0.0; logits.len()];
            softmax_row(logits, &mut pi); // NaN in, NaN out: a diverged step
            let mut grad = vec![0.0; logits.len()];
            let mut loss_sum = 0.0;
            for i in 0..g {
                let a = tokens[i];
                let ratio = pi[a] / p_old[a];
                let flat = (adv[i] >= 0.0 && ratio > 1.0 + p.epsilon_high) || (adv[i] < 0.0 && ratio < 1.0 - p.epsilon);
                let mut coef = if flat {
                    clipped += 1;
                    0.0
                } else {
                    -adv[i] * ratio
                };
                let log_r = logq[a] - pi[a].ln();
                coef += p.beta * (1.0 - log_r.exp());
                if iteration == 0 {
                    let clipped_ratio = ratio.max(1.0 - p.epsilon).min(1.0 + p.epsilon_high);
                    loss_sum += -(ratio * adv[i]).min(clipped_ratio * adv[i]) + p.beta * (log_r.exp() - log_r - 1.0);
                }
                for j in 0..logits.len() {
                    grad[j] += coef * ((if j == a { 1.0 } else { 0.0 }) - pi[j]);
                }
            }
            if iteration == 0 {
                loss = loss_sum / g as f64;
            }
            for j in 0..logits.len() {
                logits[j] -= p.lr * grad[j] / g as f64;
            }
        }
        (tokens, [mean, std, kl, clipped as f64 / (g as f64 * p.num_iterations as f64), loss])
    }

    #[test]
    fn the_step_is_the_literal_algorithm_bit_for_bit() {
        let mut rng = Mt19937::from_seed(21);
        for trial in 0..3000 {
            let v = if trial % 5 == 0 { 5 } else { 8 };
            let scale = [0.0, 1.0, 3.0][trial % 3];
            let logits: Vec<f64> = (0..v).map(|_| (rng.random() - 0.5) * 2.0 * scale).collect();
            let reference: Vec<f64> = (0..v).map(|_| rng.random() - 0.5).collect();
            let w: Vec<f64> = (0..v).map(|_| (rng.random() * 4.0).floor() - 1.5).collect();
            let g = [2, 3, 8, 16][trial % 4];
            let p = GrpoParams::new(
                g as i64,
                [0.0, 0.04, 0.5][trial % 3],
                [0.1, 0.2][trial % 2],
                if trial % 7 < 3 { None } else { Some(0.28) },
                [0.05, 0.5, 3.0][trial % 3],
                if trial % 2 == 0 { ScaleRewards::Group } else { ScaleRewards::None },
                [1, 2, 4][(trial / 3) % 3],
            )
            .unwrap();
            let uniforms: Vec<f64> = (0..g).map(|_| rng.random()).collect();
            let mut logq = vec![0.0; v];
            log_softmax_row(&reference, &mut logq);
            let (mut fast, mut slow) = (logits.clone(), logits.clone());
            let result = grpo_step(&mut fast, &reference, &w, &uniforms, &p);
            let (expected_tokens, expected) = literal_step(&mut slow, &logq, &w, &uniforms, &p);
            let Ok((out, tokens)) = result else {
                assert!(overflowed(&slow), "trial {trial}: {result:?}");
                assert_eq!(fast, logits, "trial {trial}: an overflowing step leaves the logits as they were");
                continue;
            };
            assert_eq!(tokens, expected_tokens, "trial {trial}");
            let got = [out.score, out.reward_std, out.kl, out.clip_frac, out.loss];
            assert_eq!(got.map(f64::to_bits), expected.map(f64::to_bits), "trial {trial}: {got:?} vs {expected:?}");
            assert_eq!(fast, slow, "trial {trial}");
        }
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let err = |g, beta, eps, high, lr, iters| {
            GrpoParams::new(g, beta, eps, high, lr, ScaleRewards::Group, iters).unwrap_err().to_string()
        };
        assert!(err(1, 0.04, 0.2, None, 0.05, 1).contains("num_generations"));
        assert!(err(8, -0.1, 0.2, None, 0.05, 1).contains("beta"));
        assert!(err(8, 0.04, 0.0, None, 0.05, 1).contains("epsilon"));
        assert!(err(8, 0.04, 0.2, Some(f64::NAN), 0.05, 1).contains("epsilon_high"));
        assert!(err(8, 0.04, 0.2, None, 0.0, 1).contains("lr"));
        assert!(err(8, 0.04, 0.2, None, 0.05, 0).contains("num_iterations"));
        assert_eq!(err(1 << 31, 0.04, 0.2, None, 0.05, 1), "num_generations must be <= 65536, got 2147483648");
        assert_eq!(err(8, 0.04, 0.2, None, 0.05, 10_001), "num_iterations must be <= 10000, got 10001");
        assert!(GrpoParams::new(65536, 0.0, 0.2, None, 0.1, ScaleRewards::Group, 10_000).is_ok());
        assert!(ScaleRewards::parse("batch").unwrap_err().to_string().contains("scale_rewards"));
        let p = GrpoParams::new(2, 0.04, 0.2, None, 0.05, ScaleRewards::None, 1).unwrap();
        let mut row = [0.0; 8];
        assert!(grpo_step(&mut row, &[0.0; 8], &WEIGHTS, &[0.5], &p).is_err());
        let wild = GrpoParams::new(2, 0.0, 0.2, None, 1e300, ScaleRewards::None, 1).unwrap();
        let err = grpo_step(&mut row, &[0.0; 8], &WEIGHTS, &[0.1, 0.9], &wild).unwrap_err();
        assert_eq!(err, Error::Diverged("grpo_step diverged: logits overflowed (lr=1e+300, beta=0.0)".to_owned()));
        assert_eq!(row, [0.0; 8]);
        assert!(grpo_step(&mut row, &[0.0; 8], &WEIGHTS, &[0.5, 1.0], &p).is_err());
        assert!(grpo_step(&mut row, &[0.0; 7], &WEIGHTS, &[0.5, 0.1], &p).is_err());
        assert_eq!(row, [0.0; 8]);
    }
}
