//! What the sequence-world engines of DPO, GRPO and Best-of-N share: a response sampled
//! token by token, and the exact statistics of a policy kept per prompt.

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
