//! Retention: which snapshots must stay restorable.
//!
//! The policy counts snapshots the way restic's `forget --keep-*` does:
//! `keep-last` keeps the N newest; `keep-hourly` keeps the newest snapshot
//! of each of the N most recent hours that have one; likewise daily, weekly
//! (weeks start on Monday), monthly and yearly, all in UTC. A snapshot kept
//! by any rule is kept; the newest snapshot is always kept.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::SnapshotId;

/// How many snapshots to keep, per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Retention {
    /// The N newest snapshots.
    pub keep_last: u32,
    /// The newest of each of the N most recent hours with snapshots.
    pub keep_hourly: u32,
    /// … of each of the N most recent days.
    pub keep_daily: u32,
    /// … of each of the N most recent weeks.
    pub keep_weekly: u32,
    /// … of each of the N most recent months.
    pub keep_monthly: u32,
    /// … of each of the N most recent years.
    pub keep_yearly: u32,
}

impl Default for Retention {
    /// last 10, hourly 24, daily 14, weekly 8, monthly 12, yearly 0: a day
    /// of hourly history for "I broke it an hour ago", two weeks of daily,
    /// two months of weekly and a year of monthly snapshots.
    fn default() -> Self {
        Self {
            keep_last: 10,
            keep_hourly: 24,
            keep_daily: 14,
            keep_weekly: 8,
            keep_monthly: 12,
            keep_yearly: 0,
        }
    }
}

fn month_of(ms: i64) -> i64 {
    // Month index from the id's text form is simplest: YYYYMM.
    let id = SnapshotId::new(ms, 0);
    let t = id.as_str().as_bytes();
    let num =
        |r: std::ops::Range<usize>| t[r].iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0'));
    num(0..4) * 12 + num(4..6)
}

impl Retention {
    /// Keeps nothing but the newest snapshot.
    pub fn newest_only() -> Self {
        Self {
            keep_last: 1,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
        }
    }

    /// The snapshots this policy keeps out of `snapshots`.
    pub fn select(&self, snapshots: &[SnapshotId]) -> BTreeSet<SnapshotId> {
        let mut newest_first: Vec<&SnapshotId> = snapshots.iter().collect();
        newest_first.sort_by(|a, b| b.cmp(a));
        newest_first.dedup();
        let mut keep = BTreeSet::new();
        if let Some(n) = newest_first.first() {
            keep.insert((*n).clone());
        }
        const HOUR: i64 = 3_600_000;
        const DAY: i64 = 86_400_000;
        let rules: [(u32, &dyn Fn(i64) -> i64); 6] = [
            (self.keep_last, &|_| 0),
            (self.keep_hourly, &|ms| ms.div_euclid(HOUR)),
            (self.keep_daily, &|ms| ms.div_euclid(DAY)),
            // 1970-01-01 was a Thursday; +3 days makes weeks start on Monday.
            (self.keep_weekly, &|ms| {
                (ms.div_euclid(DAY) + 3).div_euclid(7)
            }),
            (self.keep_monthly, &month_of),
            (self.keep_yearly, &|ms| month_of(ms).div_euclid(12)),
        ];
        for (i, (count, bucket)) in rules.iter().enumerate() {
            let mut left = *count;
            let mut last: Option<i64> = None;
            for s in &newest_first {
                if left == 0 {
                    break;
                }
                let b = bucket(s.ms());
                if i == 0 || last != Some(b) {
                    keep.insert((*s).clone());
                    left -= 1;
                    last = Some(b);
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn at(ms: i64) -> SnapshotId {
        SnapshotId::new(ms, 0)
    }

    #[test]
    fn keep_last_and_hourly() {
        let base = 1_795_484_700_000;
        // Four snapshots per hour for five hours.
        let snaps: Vec<_> = (0..20).map(|i| at(base + i * H / 4)).collect();
        let p = Retention {
            keep_last: 2,
            keep_hourly: 3,
            ..Retention::newest_only()
        };
        let kept = p.select(&snaps);
        // 2 newest, plus the newest of the 3 most recent hours (one overlaps).
        assert!(kept.contains(&snaps[19]) && kept.contains(&snaps[18]));
        assert_eq!(kept.len(), 4, "{kept:?}");
    }

    #[test]
    fn newest_is_always_kept() {
        let snaps = vec![at(1_000), at(2_000)];
        let p = Retention {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
        };
        assert_eq!(
            p.select(&snaps).into_iter().collect::<Vec<_>>(),
            vec![at(2_000)]
        );
    }

    #[test]
    fn daily_weekly_monthly_buckets() {
        let day = 24 * H;
        let base = 1_795_484_700_000; // a Tuesday
        let snaps: Vec<_> = (0..100).map(|i| at(base + i * day)).collect();
        let p = Retention {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 3,
            ..Retention::newest_only()
        };
        let kept = p.select(&snaps);
        for s in &snaps[93..] {
            assert!(kept.contains(s));
        }
        assert!(kept.len() <= 1 + 7 + 4 + 3);
        assert!(kept.len() >= 7 + 3);
    }
}
