//! Which user a request is for: Zipf-distributed over `--users` ids, so a few
//! users are hot and most are cold, as in a chat service.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, Zipf};

/// Picks user indexes in `0..users`; index 0 is the hottest.
#[derive(Debug, Clone)]
pub struct UserPicker {
    users: u64,
    zipf: Option<Zipf<f64>>,
}

impl UserPicker {
    /// `users` ids with Zipf exponent `s` (0 = uniform).
    ///
    /// # Errors
    /// No users, or `s` negative or not finite.
    pub fn new(users: u64, s: f64) -> Result<UserPicker, String> {
        if users == 0 {
            return Err("--users must be at least 1".into());
        }
        if !s.is_finite() || s < 0.0 {
            return Err(format!(
                "--zipf must be a finite number >= 0 (0 = uniform), not {s}"
            ));
        }
        let zipf = if s == 0.0 {
            None
        } else {
            // u64 -> f64 loses precision past 2^53 users; irrelevant here.
            let n = users as f64;
            Some(Zipf::new(n, s).map_err(|e| format!("--zipf {s}: {e}"))?)
        };
        Ok(UserPicker { users, zipf })
    }

    /// How many users there are.
    pub fn users(&self) -> u64 {
        self.users
    }

    /// A user index in `0..users()`.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.users),
            Some(z) => {
                // Samples are 1..=n as floats; `as` saturates.
                let rank = z.sample(rng) as u64;
                rank.saturating_sub(1).min(self.users - 1)
            }
        }
    }
}

/// The user id of index `i`: `{prefix}{i}`.
pub fn user_id(prefix: &str, i: u64) -> String {
    format!("{prefix}{i}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn histogram(p: &UserPicker, draws: usize) -> Vec<u64> {
        let mut rng = SmallRng::seed_from_u64(42);
        let mut h = vec![0u64; usize::try_from(p.users()).unwrap()];
        for _ in 0..draws {
            h[usize::try_from(p.pick(&mut rng)).unwrap()] += 1;
        }
        h
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let h = histogram(&UserPicker::new(100, 1.0).unwrap(), 100_000);
        // P(rank 1) = 1/H(100) ~ 0.19; P(rank 2) about half of it.
        assert!((17_000..21_500).contains(&h[0]), "{}", h[0]);
        assert!(h[0] > h[1] && h[1] > h[9] && h[9] > h[99]);
        assert!(h[99] > 0);
    }

    #[test]
    fn zero_is_uniform_and_bad_parameters_are_refused() {
        let h = histogram(&UserPicker::new(10, 0.0).unwrap(), 100_000);
        assert!(h.iter().all(|&c| (9_000..11_000).contains(&c)), "{h:?}");
        assert_eq!(histogram(&UserPicker::new(1, 1.2).unwrap(), 100), vec![100]);
        assert!(UserPicker::new(0, 1.0).is_err());
        assert!(UserPicker::new(10, -0.5).is_err());
        assert!(UserPicker::new(10, f64::NAN).is_err());
        assert_eq!(user_id("load-user-", 7), "load-user-7");
    }
}
