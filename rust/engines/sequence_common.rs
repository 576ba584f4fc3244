//! What the sequence-world engines of PPO, DPO, GRPO and Best-of-N share: a response sampled
//! token by token, the exact statistics of a policy kept per prompt, and the sweep loop of
//! the engines that step a whole batch at a time.

use super::driver::{Keep, Monitor, Ticker};
use crate::error::Result;
use crate::kernels::sampling::sample_index;
use crate::methods::token_ppo::{SequenceStats, TokenWorld, EOS};
use crate::rng::Mt19937;

/// A response to one prompt, drawn from its rows of probabilities `probs [L, V]`: `a_t =
/// sample_index(probs[t], rng.random())` until the first EOS (kept) or `L` tokens, into
/// `tokens` (cleared first), as the token PPO engine draws its rollouts.
pub(crate) fn sample_response(probs: &[f64], vocab: usize, rng: &mut Mt19937, tokens: &mut Vec<usize>) {
    tokens.clear();
    for row in probs.chunks_exact(vocab) {
        let a = sample_index(row, rng.random());
        tokens.push(a);
        if a == EOS {
            break;
        }
    }
}

/// Each prompt's exact statistics under a policy, recomputed for the prompts changed since
/// they were last asked for; the means over prompts summed in prompt order.
pub(crate) struct CachedStats {
    per_prompt: Vec<SequenceStats>,
    stale: Vec<bool>,
}

impl CachedStats {
    pub(crate) fn new(n_prompts: usize) -> Self {
        CachedStats { per_prompt: vec![SequenceStats::default(); n_prompts], stale: vec![true; n_prompts] }
    }

    pub(crate) fn changed(&mut self, p: usize) {
        self.stale[p] = true;
    }

    /// The means over prompts, and how many prompts were recomputed.
    pub(crate) fn means(&mut self, world: &TokenWorld<'_>, theta: &[f64]) -> (SequenceStats, usize) {
        let block = world.max_len * world.vocab_size;
        let mut recomputed = 0;
        let mut total = SequenceStats::default();
        for p in 0..world.n_prompts {
            if self.stale[p] {
                self.per_prompt[p] = world.prompt_stats(p, &theta[p * block..(p + 1) * block]);
                self.stale[p] = false;
                recomputed += 1;
            }
            let s = &self.per_prompt[p];
            total.proxy_score += s.proxy_score;
            total.gold_score += s.gold_score;
            total.kl += s.kl;
            total.length += s.length;
        }
        let n = world.n_prompts as f64;
        let means = SequenceStats {
            proxy_score: total.proxy_score / n,
            gold_score: total.gold_score / n,
            kl: total.kl / n,
            length: total.length / n,
        };
        (means, recomputed)
    }
}

/// A run of a batch-stepping sequence-world engine (token PPO, verifier GRPO) as its sweep
/// loop sees it: a step and its record of `N` fields, and the policy it leaves.
pub(crate) trait BatchRun<const N: usize> {
    /// Step `t`; its record, or the error that `run_name` (`sweep run 3`) begins.
    fn step(&mut self, t: usize, run_name: &str) -> Result<[f64; N]>;

    /// The work of one step in the monitor's units.
    fn work_per_step(&self) -> u64;

    /// The policy `[P, L, V]` as the last step left it.
    fn theta(&self) -> &[f64];
}

/// `steps` steps of `run` in a sweep: each kept step's record, then the exact proxy score,
/// gold score, KL and length of the policy after it, into `history` (`[N + 4, kept]`);
/// returns those four statistics of the final policy. `monitor` is ticked every step.
pub(crate) fn sweep_batch_run<const N: usize>(
    world: &TokenWorld<'_>,
    run: &mut impl BatchRun<N>,
    steps: usize,
    record_every: usize,
    run_name: &str,
    history: &mut [f64],
    monitor: &Monitor,
) -> Result<[f64; 4]> {
    let kept = history.len() / (N + 4);
    let mut ticker = Ticker::new(monitor);
    let work_per_step = run.work_per_step();
    let mut keep = Keep::new(record_every);
    for t in 0..steps {
        let record = run.step(t, run_name)?;
        if let Some(slot) = keep.slot() {
            let stats = world.stats(run.theta());
            let exact = [stats.proxy_score, stats.gold_score, stats.kl, stats.length];
            for (f, value) in record.into_iter().chain(exact).enumerate() {
                history[f * kept + slot] = value;
            }
        }
        ticker.advance(1, work_per_step)?;
    }
    ticker.flush()?;
    let stats = world.stats(run.theta());
    Ok([stats.proxy_score, stats.gold_score, stats.kl, stats.length])
}
