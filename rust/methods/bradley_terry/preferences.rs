//! A tokenised preference set, stored the way the reward model's SGD reads it.
//!
//! Sequential SGD is one dependency chain: a pair's margin needs the weights its predecessor
//! just stepped, and its step needs the margin's sigmoid. Followed literally, every pair waits
//! for its predecessor's stores to come back from memory, two dot products, `exp` and a
//! division. Two changes make the chain about half as long:
//!
//! - **Fixed-width bags.** Where every bag has at most two (or four) distinct tokens, the pairs
//!   are stored with each bag padded to that width, so no loop has a data-dependent trip count
//!   to mispredict. A padding entry has count 0 and its own scratch weight (one per position,
//!   so the padding never forms a chain of its own through one memory slot). Larger bags are
//!   stored ragged and trained on the reference's loop.
//! - **The margin from the weights before the previous step.** With `d` a pair's difference
//!   of bags (chosen counts minus rejected counts) and `g` the previous pair's sigmoid,
//!   `w_new · d = w_old · d + lr * g * (d_prev · d)`. The dot product `w_old · d` runs while
//!   the previous sigmoid is still being computed, and the overlap `d_prev · d` (an integer)
//!   is stored with the pair. Only a multiply-add remains between one sigmoid and the next.
//!
//! The weights take the reference's steps, but each margin is rounded along another path, so a
//! step can differ from the reference's by an ulp or so. The fast pass is only used where such
//! differences cannot grow: if `lr * |d|^2 <= 8` for every pair, each SGD step is non-expansive
//! (its Jacobian `I - lr * sigmoid' * d d^T` has eigenvalues in [-1, 1]), so the differences at
//! most add up; after a million lesson pairs the weights are 1.5e-16 (relative) from the
//! reference's. Otherwise the exact pass runs, operation for operation the reference's.

use super::{rm_update, BagEntry};
use crate::error::{reserve, Result};
use crate::kernels::logistic::sigmoid;

const NARROW: usize = 2;
const WIDE: usize = 4;
/// Scratch weights in front of the vocabulary: one per padding position of the wide layout.
const SCRATCH: usize = 2 * WIDE;
/// `lr * |d|^2` up to which the fast pass is non-expansive.
const NON_EXPANSIVE: f64 = 8.0;
/// Packed counts stay below this, so overlaps of counts fit in an i64 with room to spare.
const MAX_PACKED_COUNT: u32 = 1 << 16;
/// Pairs (packed layouts) or bag entries (ragged) between two progress reports of an epoch:
/// well under a millisecond of SGD.
const REPORT_EVERY: usize = 1 << 16;

/// One bag of a stored pair: `(token id, count)` entries in first-seen order.
#[derive(Clone, Copy, Debug)]
pub enum Bag<'a> {
    /// Token ids offset by `SCRATCH`, padded with count-0 entries at the end.
    Packed(&'a [u32], &'a [u32]),
    Ragged(&'a [BagEntry]),
}

impl<'a> Bag<'a> {
    pub fn entries(self) -> impl Iterator<Item = BagEntry> + 'a {
        let (packed, ragged) = match self {
            Bag::Packed(tokens, counts) => {
                let real = tokens.iter().zip(counts).take_while(|&(_, &count)| count != 0);
                (Some(real.map(|(&token, &count)| (token - SCRATCH as u32, f64::from(count)))), None)
            }
            Bag::Ragged(entries) => (None, Some(entries.iter().copied())),
        };
        packed.into_iter().flatten().chain(ragged.into_iter().flatten())
    }
}

/// A pair with both bags padded to `W` entries; padding position `j` (chosen first, then
/// rejected) uses scratch weight `j`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct PackedPair<const W: usize> {
    chosen: [u32; W],
    rejected: [u32; W],
    chosen_counts: [u32; W],
    rejected_counts: [u32; W],
    /// `d_prev · d` with the previous pair of the set (0 for the first).
    overlap: f64,
}

impl<const W: usize> PackedPair<W> {
    fn empty() -> Self {
        PackedPair {
            chosen: std::array::from_fn(|j| j as u32),
            rejected: std::array::from_fn(|j| (W + j) as u32),
            chosen_counts: [0; W],
            rejected_counts: [0; W],
            overlap: 0.0,
        }
    }

    /// The pair of two responses (token-id sequences); `None` if one does not fit.
    fn new(chosen: &[u32], rejected: &[u32]) -> Option<Self> {
        let mut pair = Self::empty();
        fill(&mut pair.chosen, &mut pair.chosen_counts, chosen.iter().map(|&t| (t, 1)))?;
        fill(&mut pair.rejected, &mut pair.rejected_counts, rejected.iter().map(|&t| (t, 1)))?;
        Some(pair)
    }

    fn bags(&self) -> (Bag<'_>, Bag<'_>) {
        (Bag::Packed(&self.chosen, &self.chosen_counts), Bag::Packed(&self.rejected, &self.rejected_counts))
    }

    /// `d_self · d_other`, summed as integers: exact, and without branches (whether two
    /// random tokens match is unpredictable) or a serial chain of float additions.
    fn diff_dot(&self, other: &Self) -> f64 {
        fn overlap<const W: usize>(a: &[u32; W], ca: &[u32; W], b: &[u32; W], cb: &[u32; W]) -> i64 {
            let mut total = 0;
            for j in 0..W {
                for k in 0..W {
                    total += i64::from(a[j] == b[k]) * i64::from(ca[j]) * i64::from(cb[k]);
                }
            }
            total
        }
        let (c, r, oc, or) = (&self.chosen, &self.rejected, &other.chosen, &other.rejected);
        let (cc, rc, occ, orc) =
            (&self.chosen_counts, &self.rejected_counts, &other.chosen_counts, &other.rejected_counts);
        let total =
            overlap(c, cc, oc, occ) + overlap(r, rc, or, orc) - overlap(c, cc, or, orc) - overlap(r, rc, oc, occ);
        total as f64
    }

    /// `w · d`, each bag summed left to right from its first entry.
    #[inline(always)]
    fn margin(&self, w: &[f64]) -> f64 {
        bag_dot(w, &self.chosen, &self.chosen_counts) - bag_dot(w, &self.rejected, &self.rejected_counts)
    }

    /// The reference's update for this pair, `step` being `lr * g`.
    #[inline(always)]
    fn step(&self, w: &mut [f64], step: f64) {
        for j in 0..W {
            w[self.chosen[j] as usize] += step * f64::from(self.chosen_counts[j]);
        }
        for j in 0..W {
            w[self.rejected[j] as usize] -= step * f64::from(self.rejected_counts[j]);
        }
    }
}

impl PackedPair<NARROW> {
    /// The same pair in the wide layout: real entries keep their positions, padding takes the
    /// wide layout's scratch slots.
    fn widen(&self) -> PackedPair<WIDE> {
        let mut wide = PackedPair::<WIDE>::empty();
        for j in (0..NARROW).take_while(|&j| self.chosen_counts[j] != 0) {
            (wide.chosen[j], wide.chosen_counts[j]) = (self.chosen[j], self.chosen_counts[j]);
        }
        for j in (0..NARROW).take_while(|&j| self.rejected_counts[j] != 0) {
            (wide.rejected[j], wide.rejected_counts[j]) = (self.rejected[j], self.rejected_counts[j]);
        }
        wide.overlap = self.overlap;
        wide
    }
}

/// Adds `(token, count)` entries to a padded bag; `None` if it overflows the width or a count.
fn fill<const W: usize>(
    tokens: &mut [u32; W],
    counts: &mut [u32; W],
    entries: impl Iterator<Item = (u32, u32)>,
) -> Option<()> {
    let mut len = 0;
    for (token, count) in entries {
        let id = token.checked_add(SCRATCH as u32)?;
        match tokens[..len].iter().position(|&t| t == id) {
            Some(j) if counts[j] + count < MAX_PACKED_COUNT => counts[j] += count,
            None if len < W && count < MAX_PACKED_COUNT => {
                (tokens[len], counts[len]) = (id, count);
                len += 1;
            }
            _ => return None,
        }
    }
    Some(())
}

#[inline(always)]
fn bag_dot<const W: usize>(w: &[f64], tokens: &[u32; W], counts: &[u32; W]) -> f64 {
    let mut total = w[tokens[0] as usize] * f64::from(counts[0]);
    for j in 1..W {
        total += w[tokens[j] as usize] * f64::from(counts[j]);
    }
    total
}

#[derive(Clone, Debug, PartialEq)]
enum Layout {
    Narrow(Vec<PackedPair<NARROW>>),
    Wide(Vec<PackedPair<WIDE>>),
    /// Pair `i`'s chosen bag is `entries[bounds[2i]..bounds[2i+1]]`, its rejected bag
    /// `entries[bounds[2i+1]..bounds[2i+2]]`.
    Ragged {
        entries: Vec<BagEntry>,
        bounds: Vec<u32>,
    },
}

/// A tokenised preference set: per pair a prompt id and two bags of token ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Preferences {
    pub prompts: Vec<u32>,
    layout: Layout,
    /// The largest `|d|^2` over the pairs (packed layouts only).
    max_diff_norm: f64,
    used: Vec<bool>,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences::new()
    }
}

impl Preferences {
    pub fn new() -> Self {
        Preferences { prompts: Vec::new(), layout: Layout::Narrow(Vec::new()), max_diff_norm: 0.0, used: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Room for `additional` more pairs of the current layout, or `Error::OutOfMemory`.
    pub fn reserve(&mut self, additional: usize) -> Result<()> {
        let what = "the preference pairs";
        reserve(&mut self.prompts, additional, what)?;
        match &mut self.layout {
            Layout::Narrow(pairs) => reserve(pairs, additional, what),
            Layout::Wide(pairs) => reserve(pairs, additional, what),
            Layout::Ragged { bounds, .. } => reserve(bounds, 2 * additional, what),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Appends a pair given as token-id sequences; each becomes a bag in first-seen order.
    pub fn push(&mut self, prompt: u32, chosen: &[u32], rejected: &[u32]) {
        self.prompts.push(prompt);
        for &token in chosen.iter().chain(rejected) {
            if token as usize >= self.used.len() {
                self.used.resize(token as usize + 1, false);
            }
            self.used[token as usize] = true;
        }
        loop {
            match &mut self.layout {
                Layout::Narrow(pairs) => match PackedPair::new(chosen, rejected) {
                    Some(pair) => return push_packed(pairs, pair, &mut self.max_diff_norm),
                    None => self.layout = Layout::Wide(pairs.iter().map(PackedPair::widen).collect()),
                },
                Layout::Wide(pairs) => match PackedPair::new(chosen, rejected) {
                    Some(pair) => return push_packed(pairs, pair, &mut self.max_diff_norm),
                    None => self.layout = ragged(pairs),
                },
                Layout::Ragged { entries, bounds } => {
                    for response in [chosen, rejected] {
                        let start = entries.len();
                        for &token in response {
                            match entries[start..].iter_mut().find(|(t, _)| *t == token) {
                                Some((_, count)) => *count += 1.0,
                                None => entries.push((token, 1.0)),
                            }
                        }
                        bounds.push(entries.len() as u32);
                    }
                    return;
                }
            }
        }
    }

    /// The chosen and rejected bags of pair `i`.
    pub fn pair(&self, i: usize) -> (Bag<'_>, Bag<'_>) {
        match &self.layout {
            Layout::Narrow(pairs) => pairs[i].bags(),
            Layout::Wide(pairs) => pairs[i].bags(),
            Layout::Ragged { entries, bounds } => {
                let (a, b, c) = (bounds[2 * i] as usize, bounds[2 * i + 1] as usize, bounds[2 * i + 2] as usize);
                (Bag::Ragged(&entries[a..b]), Bag::Ragged(&entries[b..c]))
            }
        }
    }

    /// Pair `i`'s responses as token ids, each bag's tokens grouped in first-seen order.
    pub fn responses(&self, i: usize) -> (Vec<u32>, Vec<u32>) {
        let ids = |bag: Bag| bag.entries().flat_map(|(t, c)| std::iter::repeat_n(t, c as usize)).collect();
        let (chosen, rejected) = self.pair(i);
        (ids(chosen), ids(rejected))
    }

    /// The largest token id used, plus one (0 for an empty set).
    pub fn vocab_size(&self) -> usize {
        self.used.len()
    }

    /// Whether each token id below [`Self::vocab_size`] occurs in some response.
    pub fn used_tokens(&self) -> &[bool] {
        &self.used
    }

    /// One SGD pass over `pairs[range]` in order, updating `w` in place: the fast pass where
    /// it is non-expansive (see the module's notes), else the reference's loop. Every so often
    /// (at most 65536 pairs apart) `report(pairs done since the last report)` is called; its
    /// error stops the pass there. Where the reports fall changes no arithmetic.
    pub(crate) fn fit_epoch(
        &self,
        range: std::ops::Range<usize>,
        lr: f64,
        w: &mut [f64],
        report: &mut impl FnMut(u64) -> Result<()>,
    ) -> Result<()> {
        let fast = lr * self.max_diff_norm <= NON_EXPANSIVE;
        match &self.layout {
            Layout::Narrow(pairs) => fit_packed(&pairs[range], lr, fast, w, report),
            Layout::Wide(pairs) => fit_packed(&pairs[range], lr, fast, w, report),
            Layout::Ragged { bounds, .. } => {
                // Ragged bags can be long: report by entries, not pairs.
                let (mut pairs_done, mut entries_done) = (0, 0);
                for i in range {
                    let (chosen, rejected) = self.pair(i);
                    rm_update(w, chosen, rejected, lr);
                    pairs_done += 1;
                    entries_done += (bounds[2 * i + 2] - bounds[2 * i]) as usize;
                    if entries_done >= REPORT_EVERY {
                        report(std::mem::take(&mut pairs_done))?;
                        entries_done = 0;
                    }
                }
                report(pairs_done)
            }
        }
    }
}

fn push_packed<const W: usize>(pairs: &mut Vec<PackedPair<W>>, mut pair: PackedPair<W>, max_diff_norm: &mut f64) {
    pair.overlap = pairs.last().map_or(0.0, |previous| previous.diff_dot(&pair));
    *max_diff_norm = max_diff_norm.max(pair.diff_dot(&pair));
    pairs.push(pair);
}

fn ragged<const W: usize>(pairs: &[PackedPair<W>]) -> Layout {
    let (mut entries, mut bounds) = (Vec::new(), vec![0]);
    for pair in pairs {
        let (chosen, rejected) = pair.bags();
        for bag in [chosen, rejected] {
            entries.extend(bag.entries());
            bounds.push(entries.len() as u32);
        }
    }
    Layout::Ragged { entries, bounds }
}

fn fit_packed<const W: usize>(
    pairs: &[PackedPair<W>],
    lr: f64,
    fast: bool,
    w: &mut [f64],
    report: &mut impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let mut padded = vec![0.0; SCRATCH + w.len()];
    padded[SCRATCH..].copy_from_slice(w);
    let outcome = if fast {
        fast_pass(pairs, lr, &mut padded, report)
    } else {
        pairs.chunks(REPORT_EVERY).try_for_each(|chunk| {
            for pair in chunk {
                let g = sigmoid(-pair.margin(&padded));
                pair.step(&mut padded, lr * g);
            }
            report(chunk.len() as u64)
        })
    };
    w.copy_from_slice(&padded[SCRATCH..]);
    outcome
}

fn fast_pass<const W: usize>(
    pairs: &[PackedPair<W>],
    lr: f64,
    w: &mut [f64],
    report: &mut impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let Some(&first) = pairs.first() else { return report(0) };
    // The first pair's predecessor (outside the pass) contributes nothing: its g is 0. The
    // state (the previous pair and its g) carries over from one chunk to the next, so the
    // chunks take exactly the steps of one unbroken pass.
    let (mut previous, mut g) = (first, 0.0);
    for chunk in pairs.chunks(REPORT_EVERY) {
        for pair in chunk {
            let margin = pair.margin(w) + g * (lr * pair.overlap);
            previous.step(w, lr * g);
            g = sigmoid(-margin);
            previous = *pair;
        }
        report(chunk.len() as u64)?;
    }
    previous.step(w, lr * g);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{bag, rm_update};
    use super::*;

    /// The reference's loop over `pairs[range]`, whatever the layout.
    fn reference_fit(pairs: &Preferences, range: std::ops::Range<usize>, epochs: usize, lr: f64, w: &mut [f64]) {
        for _ in 0..epochs {
            for i in range.clone() {
                let (chosen, rejected) = pairs.pair(i);
                rm_update(w, chosen, rejected, lr);
            }
        }
    }

    fn mixed_pairs(n: usize, width: usize) -> Preferences {
        let mut rng = crate::rng::Mt19937::from_seed(11);
        let mut prefs = Preferences::new();
        for _ in 0..n {
            let mut response = || (0..1 + rng.randbelow(width as u32)).map(|_| rng.randbelow(9)).collect::<Vec<_>>();
            let (chosen, rejected) = (response(), response());
            prefs.push(rng.randbelow(3), &chosen, &rejected);
        }
        prefs
    }

    #[test]
    fn layouts_widen_and_fall_back_keeping_every_bag() {
        let mut prefs = Preferences::new();
        let responses = [(vec![3, 3], vec![1]), (vec![0, 2, 2, 5], vec![4, 4, 4]), (vec![1, 2, 3, 4, 6], vec![7])];
        for (k, (chosen, rejected)) in responses.iter().enumerate() {
            prefs.push(k as u32, chosen, rejected);
            let expected = ["Narrow", "Wide", "Ragged"][k];
            assert!(format!("{:?}", prefs.layout).starts_with(expected), "after pair {k}: {:?}", prefs.layout);
            for (i, (c, r)) in responses[..=k].iter().enumerate() {
                let (chosen, rejected) = prefs.pair(i);
                assert_eq!(chosen.entries().collect::<Vec<_>>(), bag(c));
                assert_eq!(rejected.entries().collect::<Vec<_>>(), bag(r));
            }
        }
        assert_eq!(prefs.responses(1), (vec![0, 2, 2, 5], vec![4, 4, 4]));
        assert_eq!(prefs.vocab_size(), 8);
        assert_eq!(prefs.used_tokens(), [true, true, true, true, true, true, true, true]);
    }

    #[test]
    fn overlaps_are_dot_products_of_the_bag_differences() {
        let prefs = mixed_pairs(300, 4);
        let Layout::Wide(pairs) = &prefs.layout else { panic!("expected the wide layout") };
        let diff = |i: usize| {
            let mut d = [0.0; 9];
            let (chosen, rejected) = prefs.pair(i);
            chosen.entries().for_each(|(t, c)| d[t as usize] += c);
            rejected.entries().for_each(|(t, c)| d[t as usize] -= c);
            d
        };
        let dot = |a: [f64; 9], b: [f64; 9]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let mut max_norm = 0.0_f64;
        for (i, pair) in pairs.iter().enumerate() {
            let expected = if i == 0 { 0.0 } else { dot(diff(i - 1), diff(i)) };
            assert_eq!(pair.overlap, expected, "pair {i}");
            max_norm = max_norm.max(dot(diff(i), diff(i)));
        }
        assert_eq!(prefs.max_diff_norm, max_norm);
    }

    #[test]
    fn fast_pass_stays_within_a_few_ulps_of_the_reference_loop() {
        for prefs in [crate::lesson::tests::make_dataset(20_000, 3), mixed_pairs(5_000, 4)] {
            for (range, epochs, lr) in [(0..prefs.len(), 2, 0.1), (100..2_000, 3, 0.3), (7..8, 1, 0.05)] {
                assert!(lr * prefs.max_diff_norm <= NON_EXPANSIVE);
                let (mut fast, mut exact) = (vec![0.1; 9], vec![0.1; 9]);
                for _ in 0..epochs {
                    prefs.fit_epoch(range.clone(), lr, &mut fast, &mut |_| Ok(())).unwrap();
                }
                reference_fit(&prefs, range, epochs, lr, &mut exact);
                for (a, b) in fast.iter().zip(&exact) {
                    assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{fast:?} vs {exact:?}");
                }
                assert_ne!(fast, vec![0.1; 9]);
            }
        }
    }

    #[test]
    fn expansive_steps_follow_the_reference_bit_for_bit() {
        for prefs in [crate::lesson::tests::make_dataset(2_000, 3), mixed_pairs(2_000, 4), mixed_pairs(500, 8)] {
            let lr = 9.0 / prefs.max_diff_norm.max(1.0); // past the non-expansive bound (or ragged)
            let (mut packed, mut exact) = (vec![0.0; 9], vec![0.0; 9]);
            for _ in 0..2 {
                prefs.fit_epoch(0..prefs.len(), lr, &mut packed, &mut |_| Ok(())).unwrap();
            }
            reference_fit(&prefs, 0..prefs.len(), 2, lr, &mut exact);
            assert_eq!(packed, exact);
        }
    }

    #[test]
    fn reports_split_no_pass_and_an_error_stops_it() {
        let prefs = crate::lesson::tests::make_dataset(3 * REPORT_EVERY / 2, 5);
        let Layout::Narrow(pairs) = &prefs.layout else { panic!("expected the narrow layout") };
        // One unbroken fast pass, as the pass was before it reported.
        let mut unbroken = vec![0.0; SCRATCH + 9];
        let (mut previous, mut g) = (pairs[0], 0.0);
        for pair in pairs {
            let margin = pair.margin(&unbroken) + g * (0.1 * pair.overlap);
            previous.step(&mut unbroken, 0.1 * g);
            g = sigmoid(-margin);
            previous = *pair;
        }
        previous.step(&mut unbroken, 0.1 * g);
        let mut w = vec![0.0; 9];
        let mut reports = Vec::new();
        prefs
            .fit_epoch(0..prefs.len(), 0.1, &mut w, &mut |n| {
                reports.push(n);
                Ok(())
            })
            .unwrap();
        assert_eq!(w, unbroken[SCRATCH..]);
        assert_eq!(reports, [REPORT_EVERY as u64, (REPORT_EVERY / 2) as u64]);
        let stop = |_| Err(crate::error::Error::Cancelled);
        assert_eq!(prefs.fit_epoch(0..prefs.len(), 0.1, &mut w, &mut { stop }), Err(crate::error::Error::Cancelled));
        let ragged = mixed_pairs(20_000, 8);
        assert!(matches!(ragged.layout, Layout::Ragged { .. }));
        let mut done = 0;
        ragged
            .fit_epoch(0..ragged.len(), 0.1, &mut [0.0; 9], &mut |n| {
                done += n;
                Ok(())
            })
            .unwrap();
        assert_eq!(done, 20_000);
    }
}
