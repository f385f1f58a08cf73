//! The operation mix: `append=90,read=9,erase=1`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// One kind of request the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `Store.Append` (or one request on `Store.AppendStream` with `--stream`).
    Append,
    /// `Store.Read` of up to `--read-limit` messages, each verified.
    Read,
    /// `Store.Erase` of the user.
    Erase,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 3] = [Op::Append, Op::Read, Op::Erase];

    /// The lower-case name used in `--mix`, reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Op::Append => "append",
            Op::Read => "read",
            Op::Erase => "erase",
        }
    }

    /// Position in [`Op::ALL`].
    pub fn index(self) -> usize {
        match self {
            Op::Append => 0,
            Op::Read => 1,
            Op::Erase => 2,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Relative weights of the operations; an operation left out of `--mix` has
/// weight 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 3],
    total: u32,
}

/// Why a `--mix` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --mix {input:?}: {reason} (expected e.g. append=90,read=9,erase=1)")]
pub struct MixError {
    input: String,
    reason: String,
}

impl Mix {
    /// A mix from explicit weights.
    ///
    /// # Errors
    /// If every weight is 0 or they sum past `u32::MAX`.
    pub fn new(append: u32, read: u32, erase: u32) -> Result<Mix, MixError> {
        let err = |reason: &str| MixError {
            input: format!("append={append},read={read},erase={erase}"),
            reason: reason.to_owned(),
        };
        let total = append
            .checked_add(read)
            .and_then(|t| t.checked_add(erase))
            .ok_or_else(|| err("the weights sum past 4294967295"))?;
        if total == 0 {
            return Err(err("the weights must sum to more than 0"));
        }
        Ok(Mix {
            weights: [append, read, erase],
            total,
        })
    }

    /// The weight of `op`.
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    /// The sum of the weights (at least 1).
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The share of `op`, 0.0..=1.0.
    pub fn fraction(&self, op: Op) -> f64 {
        f64::from(self.weight(op)) / f64::from(self.total)
    }

    /// The operation for a uniform draw `r` in `0..total()` (`r` past the end
    /// picks the last operation with a weight).
    pub fn pick(&self, r: u32) -> Op {
        let mut acc = 0u32;
        let mut last = Op::Append;
        for op in Op::ALL {
            let w = self.weight(op);
            if w == 0 {
                continue;
            }
            acc = acc.saturating_add(w);
            last = op;
            if r < acc {
                return op;
            }
        }
        last
    }
}

impl Default for Mix {
    /// `append=90,read=9,erase=1`.
    fn default() -> Mix {
        Mix {
            weights: [90, 9, 1],
            total: 100,
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Op::ALL
            .iter()
            .filter(|op| self.weight(**op) > 0)
            .map(|op| format!("{}={}", op.name(), self.weight(*op)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = MixError;

    /// Parses `op=weight` pairs separated by commas. Operation names are
    /// case-insensitive, spaces around names and weights are ignored, weights
    /// are non-negative integers, each operation appears at most once.
    fn from_str(input: &str) -> Result<Mix, MixError> {
        let err = |reason: String| MixError {
            input: input.to_owned(),
            reason,
        };
        let mut weights: [Option<u32>; 3] = [None; 3];
        let mut any = false;
        for part in input.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            any = true;
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not op=weight")))?;
            let name = name.trim().to_ascii_lowercase();
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name)
                .ok_or_else(|| {
                    err(format!(
                        "unknown operation {name:?}; use append, read or erase"
                    ))
                })?;
            let weight = weight.trim();
            let w: u32 = weight.parse().map_err(|_| {
                err(format!(
                    "weight {weight:?} of {name} is not a non-negative integer"
                ))
            })?;
            let slot = &mut weights[op.index()];
            if slot.is_some() {
                return Err(err(format!("{name} appears more than once")));
            }
            *slot = Some(w);
        }
        if !any {
            return Err(err("no operations given".to_owned()));
        }
        let [a, r, e] = weights.map(|w| w.unwrap_or(0));
        Mix::new(a, r, e).map_err(|e| err(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_mixes_parse() {
        let m: Mix = "append=90,read=9,erase=1".parse().unwrap();
        assert_eq!(m, Mix::default());
        assert_eq!(m.to_string(), "append=90,read=9,erase=1");
        let m: Mix = " Read = 3 , APPEND=1 ,".parse().unwrap();
        assert_eq!(
            (
                m.weight(Op::Append),
                m.weight(Op::Read),
                m.weight(Op::Erase)
            ),
            (1, 3, 0)
        );
        assert_eq!(m.total(), 4);
        assert_eq!(m.to_string(), "append=1,read=3");
        let m: Mix = "erase=0,append=5".parse().unwrap();
        assert_eq!(m.fraction(Op::Append), 1.0);
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        for (bad, why) in [
            ("", "no operations"),
            (",,", "no operations"),
            ("append", "not op=weight"),
            ("append=x", "not a non-negative integer"),
            ("append=-1", "not a non-negative integer"),
            ("append=1.5", "not a non-negative integer"),
            ("write=3", "unknown operation"),
            ("append=1,append=2", "more than once"),
            ("append=0,read=0", "more than 0"),
            ("append=4294967295,read=1", "sum past"),
        ] {
            let e = bad.parse::<Mix>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("--mix"), "{e}");
        }
    }

    #[test]
    fn pick_follows_the_weights() {
        let m: Mix = "append=2,erase=1".parse().unwrap();
        assert_eq!(m.pick(0), Op::Append);
        assert_eq!(m.pick(1), Op::Append);
        assert_eq!(m.pick(2), Op::Erase);
        assert_eq!(m.pick(99), Op::Erase);
        let counts = (0..m.total()).fold([0; 3], |mut c, r| {
            c[m.pick(r).index()] += 1;
            c
        });
        assert_eq!(counts, [2, 0, 1]);
    }
}
