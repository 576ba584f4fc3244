//! Inverse-CDF sampling from one uniform draw.

/// The first index whose running sum exceeds `u`; the last index if rounding leaves none.
#[inline]
pub fn sample_index(probs: &[f64], u: f64) -> usize {
    let mut running = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        running += p;
        if running > u {
            return i;
        }
    }
    probs.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_interval_containing_u() {
        let p = [0.25, 0.5, 0.25];
        assert_eq!(sample_index(&p, 0.0), 0);
        assert_eq!(sample_index(&p, 0.2499), 0);
        assert_eq!(sample_index(&p, 0.25), 1);
        assert_eq!(sample_index(&p, 0.75), 2);
    }

    #[test]
    fn falls_back_to_the_last_index_when_rounding_leaves_none() {
        assert_eq!(sample_index(&[0.3, 0.3, 0.3], 0.95), 2);
    }
}
