//! Retention policy of `tresor snapshot forget`: which snapshots a policy keeps, and why.
//!
//! This module owns one decision, as a pure function of the snapshots' times, tags and groups
//! plus a [`Policy`]: every snapshot gets a [`Decision`] (keep or remove) with the rules that keep
//! it. It does no I/O and never looks at the clock: `keep-within` is relative to the newest
//! snapshot of the group. The semantics follow restic's `forget`.

use chrono::{DateTime, TimeDelta, Utc};

/// A retention policy. All counts are "how many periods/snapshots to keep"; None = rule not used.
///
/// A count (or `keep_within_secs`) of zero keeps nothing and counts as "not used" for
/// [`Policy::is_empty`], as in restic.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than (newest snapshot of the group − this many seconds).
    pub keep_within_secs: Option<u64>,
    /// Keep every snapshot carrying any of these tags.
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// True when no rule is set (forgetting with an empty policy must be refused by the caller).
    /// Rules set to zero keep nothing and are ignored here, so `--keep-last 0` alone is empty.
    pub fn is_empty(&self) -> bool {
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        counts.iter().all(|c| c.unwrap_or(0) == 0)
            && self.keep_within_secs.unwrap_or(0) == 0
            && self.keep_tags.is_empty()
    }
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Full hex id, used only as a tie-breaker and to report.
    pub id: String,
    pub time: DateTime<Utc>,
    pub tags: Vec<String>,
    /// The group key (e.g. "host=db1 sources=/etc,stdin:shop.sql"); the policy applies per group.
    pub group: String,
}

/// The verdict for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    pub group: String,
    pub keep: bool,
    /// Every rule that keeps it, e.g. ["last", "daily 2026-11-21", "weekly 2026-W47",
    /// "within 30d", "tag db"]; empty when removed.
    pub reasons: Vec<String>,
}

/// Applies `policy` to each group of `snapshots` separately. Returns one decision per input
/// snapshot, ordered by group, then newest first (ties broken by id descending).
pub fn apply(policy: &Policy, snapshots: &[Candidate]) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = snapshots.iter().collect();
    sorted.sort_by(|a, b| {
        (a.group.cmp(&b.group))
            .then(b.time.cmp(&a.time))
            .then(b.id.cmp(&a.id))
    });
    let mut out = Vec::with_capacity(sorted.len());
    for group in sorted.chunk_by(|a, b| a.group == b.group) {
        let reasons = group_reasons(policy, group);
        out.extend(group.iter().zip(reasons).map(|(c, reasons)| Decision {
            id: c.id.clone(),
            group: c.group.clone(),
            keep: !reasons.is_empty(),
            reasons,
        }));
    }
    out
}

/// The reasons for each snapshot of one group, which is sorted newest first.
fn group_reasons(policy: &Policy, group: &[&Candidate]) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); group.len()];
    if policy.is_empty() {
        reasons
            .iter_mut()
            .for_each(|r| r.push("no policy".to_string()));
        return reasons;
    }
    let last = policy.keep_last.unwrap_or(0) as usize;
    reasons
        .iter_mut()
        .take(last)
        .for_each(|r| r.push("last".to_string()));

    let periods = [
        (policy.keep_hourly, "hourly", "%Y-%m-%dT%H"),
        (policy.keep_daily, "daily", "%Y-%m-%d"),
        (policy.keep_weekly, "weekly", "%G-W%V"),
        (policy.keep_monthly, "monthly", "%Y-%m"),
        (policy.keep_yearly, "yearly", "%Y"),
    ];
    for (count, name, fmt) in periods {
        let mut left = count.unwrap_or(0);
        let mut last_bucket: Option<String> = None;
        for (c, r) in group.iter().zip(reasons.iter_mut()) {
            if left == 0 {
                break;
            }
            let bucket = c.time.format(fmt).to_string();
            if last_bucket.as_ref() != Some(&bucket) {
                r.push(format!("{name} {bucket}"));
                last_bucket = Some(bucket);
                left -= 1;
            }
        }
    }

    if let (Some(secs @ 1..), Some(newest)) = (policy.keep_within_secs, group.first()) {
        // A window reaching before the representable range keeps the whole group.
        let cutoff = i64::try_from(secs)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .and_then(|d| newest.time.checked_sub_signed(d));
        let label = format!("within {}", format_duration(secs));
        for (c, r) in group.iter().zip(reasons.iter_mut()) {
            if cutoff.is_none_or(|cut| c.time >= cut) {
                r.push(label.clone());
            }
        }
    }

    for (c, r) in group.iter().zip(reasons.iter_mut()) {
        for tag in policy.keep_tags.iter().filter(|t| c.tags.contains(t)) {
            r.push(format!("tag {tag}"));
        }
    }
    reasons
}

/// Seconds back to the largest single unit that divides them exactly: "30d", "12h", "90m", "45s".
fn format_duration(secs: u64) -> String {
    let units = [(86_400, 'd'), (3_600, 'h'), (60, 'm')];
    match units
        .iter()
        .find(|(size, _)| secs > 0 && secs.is_multiple_of(*size))
    {
        Some((size, unit)) => format!("{}{unit}", secs / size),
        None => format!("{secs}s"),
    }
}

/// Parses a duration like "30d", "12h", "90m", "2w", "1y" (365 d), "6M" (months = 30 d)... into seconds.
/// Accept also combined forms like "1y6M" or "2d12h". Units: s, m (minutes), h, d, w, M (30 days), y (365 days). Errors (a `String` message) on empty input, unknown units, a number without unit, overflow.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration (expected e.g. 30d, 12h, 1y6M)".to_string());
    }
    let overflow = || format!("duration {s:?} is too large");
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let mut chars = tail.chars();
        let unit = chars.next();
        if number.is_empty() {
            return Err(format!(
                "invalid duration {s:?}: expected a number before {tail:?}"
            ));
        }
        let size: u64 = match unit {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3_600,
            Some('d') => 86_400,
            Some('w') => 7 * 86_400,
            Some('M') => 30 * 86_400,
            Some('y') => 365 * 86_400,
            Some(other) => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (use s, m, h, d, w, M, y)"
                ));
            }
            None => {
                return Err(format!(
                    "invalid duration {s:?}: {number} has no unit (use s, m, h, d, w, M, y)"
                ));
            }
        };
        let n: u64 = number.parse().map_err(|_| overflow())?;
        total = n
            .checked_mul(size)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(overflow)?;
        rest = chars.as_str();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(set: impl FnOnce(&mut Policy)) -> Policy {
        let mut policy = Policy::default();
        set(&mut policy);
        policy
    }

    type Row<'a> = (&'a str, &'a str, &'a [&'a str]);

    fn snap(id: &str, time: &str, tags: &[&str], group: &str) -> Candidate {
        let time = DateTime::parse_from_rfc3339(time)
            .unwrap()
            .with_timezone(&Utc);
        let tags = tags.iter().map(|t| t.to_string()).collect();
        Candidate {
            id: id.into(),
            time,
            tags,
            group: group.into(),
        }
    }

    /// Checks `apply` against `want`: (id, reasons) in output order; keep must match reasons.
    fn check(policy: &Policy, input: &[Candidate], want: &[(&str, &[&str])]) {
        let got = apply(policy, input);
        assert!(
            got.iter().all(|d| d.keep != d.reasons.is_empty()),
            "{got:?}"
        );
        let got: Vec<(&str, Vec<&str>)> = got
            .iter()
            .map(|d| {
                (
                    d.id.as_str(),
                    d.reasons.iter().map(|r| r.as_str()).collect(),
                )
            })
            .collect();
        let want: Vec<(&str, Vec<&str>)> = want.iter().map(|(id, r)| (*id, r.to_vec())).collect();
        assert_eq!(got, want);
    }

    /// One group, no tags. Rows are (id, time, expected reasons) newest first; the input is fed
    /// oldest first so the sorting is exercised too.
    fn table(policy: Policy, rows: &[Row]) {
        let input: Vec<Candidate> = rows
            .iter()
            .rev()
            .map(|(id, time, _)| snap(id, time, &[], "g"))
            .collect();
        let want: Vec<(&str, &[&str])> = rows
            .iter()
            .map(|(id, _, reasons)| (*id, *reasons))
            .collect();
        check(&policy, &input, &want);
    }

    #[test]
    fn keep_last_keeps_the_n_newest() {
        table(
            with(|p| p.keep_last = Some(2)),
            &[
                ("d", "2026-11-21T10:00:00Z", &["last"]),
                ("c", "2026-11-20T10:00:00Z", &["last"]),
                ("b", "2026-11-19T10:00:00Z", &[]),
                ("a", "2026-11-18T10:00:00Z", &[]),
            ],
        );
    }

    #[test]
    fn keep_daily_newest_per_day_and_gaps_do_not_count() {
        table(
            with(|p| p.keep_daily = Some(3)),
            &[
                ("a", "2026-11-21T22:00:00Z", &["daily 2026-11-21"]),
                ("b", "2026-11-21T08:00:00Z", &[]),
                ("c", "2026-11-21T01:30:00+02:00", &["daily 2026-11-20"]), // 20th in UTC
                ("d", "2026-11-20T10:00:00Z", &[]),
                // No snapshots on the 18th and 19th: the third day kept is the 17th.
                ("e", "2026-11-17T10:00:00Z", &["daily 2026-11-17"]),
                ("f", "2026-11-17T09:00:00Z", &[]),
                ("g", "2026-11-16T12:00:00Z", &[]),
            ],
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_across_the_year_boundary() {
        table(
            with(|p| p.keep_weekly = Some(3)),
            &[
                ("a", "2027-01-05T12:00:00Z", &["weekly 2027-W01"]), // Tue
                ("b", "2027-01-03T12:00:00Z", &["weekly 2026-W53"]), // Sun
                ("c", "2027-01-01T12:00:00Z", &[]),                  // Fri, same ISO week
                ("d", "2026-12-31T12:00:00Z", &[]),                  // Thu, same ISO week
                ("e", "2026-12-27T12:00:00Z", &["weekly 2026-W52"]), // Sun
                ("f", "2026-12-20T12:00:00Z", &[]),                  // 2026-W51: count used up
            ],
        );
    }

    #[test]
    fn keep_monthly_and_yearly() {
        table(
            with(|p| {
                p.keep_monthly = Some(3);
                p.keep_yearly = Some(3);
            }),
            &[
                (
                    "a",
                    "2026-03-10T00:00:00Z",
                    &["monthly 2026-03", "yearly 2026"],
                ),
                ("b", "2026-03-02T00:00:00Z", &[]),
                ("c", "2026-01-15T00:00:00Z", &["monthly 2026-01"]),
                (
                    "d",
                    "2025-12-31T23:00:00Z",
                    &["monthly 2025-12", "yearly 2025"],
                ),
                ("e", "2025-06-01T00:00:00Z", &[]),
                ("f", "2024-02-29T00:00:00Z", &["yearly 2024"]),
                ("g", "2023-05-05T00:00:00Z", &[]),
            ],
        );
    }

    #[test]
    fn keep_hourly() {
        table(
            with(|p| p.keep_hourly = Some(3)),
            &[
                ("a", "2026-11-21T02:50:00Z", &["hourly 2026-11-21T02"]),
                ("b", "2026-11-21T02:10:00Z", &[]),
                ("c", "2026-11-21T01:59:59Z", &["hourly 2026-11-21T01"]),
                ("d", "2026-11-21T00:30:00Z", &["hourly 2026-11-21T00"]),
                ("e", "2026-11-20T23:05:00Z", &[]),
            ],
        );
    }

    #[test]
    fn keep_within_is_relative_to_the_newest_snapshot_not_now() {
        table(
            with(|p| p.keep_within_secs = Some(2 * 86_400)),
            &[
                ("a", "2020-05-10T12:00:00Z", &["within 2d"]),
                ("b", "2020-05-09T00:00:00Z", &["within 2d"]),
                ("c", "2020-05-08T12:00:00Z", &["within 2d"]), // exactly 2 days before a
                ("d", "2020-05-08T11:59:59Z", &[]),
            ],
        );
        // A window wider than all time keeps everything instead of overflowing.
        let input = [
            snap("a", "2020-05-10T12:00:00Z", &[], "g"),
            snap("b", "1970-01-01T00:00:00Z", &[], "g"),
        ];
        let huge = with(|p| p.keep_within_secs = Some(u64::MAX));
        assert!(apply(&huge, &input).iter().all(|d| d.keep));
    }

    #[test]
    fn keep_tags_in_policy_order() {
        let input = [
            snap("a", "2026-11-21T00:00:00Z", &["db"], "g"),
            snap("b", "2026-11-20T00:00:00Z", &["other"], "g"),
            snap("c", "2026-11-19T00:00:00Z", &["weekly", "db"], "g"),
            snap("d", "2026-11-18T00:00:00Z", &[], "g"),
        ];
        let policy = Policy {
            keep_tags: vec!["db".into(), "weekly".into()],
            ..Policy::default()
        };
        check(
            &policy,
            &input,
            &[
                ("a", &["tag db"]),
                ("b", &[]),
                ("c", &["tag db", "tag weekly"]),
                ("d", &[]),
            ],
        );
    }

    #[test]
    fn combined_rules_merge_reasons_in_rule_order() {
        let input = [
            snap("s1", "2026-11-21T20:00:00Z", &["pin"], "g"),
            snap("s2", "2026-11-21T09:00:00Z", &[], "g"),
            snap("s3", "2026-11-20T10:00:00Z", &[], "g"),
            snap("s4", "2026-11-19T10:00:00Z", &["pin"], "g"),
            snap("s5", "2026-11-18T10:00:00Z", &[], "g"),
        ];
        let policy = Policy {
            keep_last: Some(1),
            keep_hourly: Some(1),
            keep_daily: Some(2),
            keep_weekly: Some(1),
            keep_monthly: Some(1),
            keep_yearly: Some(1),
            keep_within_secs: Some(12 * 3_600),
            keep_tags: vec!["pin".into()],
        };
        let s1: &[&str] = &[
            "last",
            "hourly 2026-11-21T20",
            "daily 2026-11-21",
            "weekly 2026-W47",
            "monthly 2026-11",
            "yearly 2026",
            "within 12h",
            "tag pin",
        ];
        let want: &[(&str, &[&str])] = &[
            ("s1", s1),
            ("s2", &["within 12h"]),
            ("s3", &["daily 2026-11-20"]),
            ("s4", &["tag pin"]),
            ("s5", &[]),
        ];
        check(&policy, &input, want);
    }

    #[test]
    fn groups_are_evaluated_independently() {
        let input = [
            snap("b1", "2026-11-22T12:00:00Z", &[], "host=b"),
            snap("a2", "2026-11-20T12:00:00Z", &[], "host=a"),
            snap("b2", "2026-11-18T12:00:00Z", &[], "host=b"),
            snap("a1", "2026-11-21T12:00:00Z", &[], "host=a"),
            snap("a3", "2026-11-19T12:00:00Z", &[], "host=a"),
        ];
        let policy = with(|p| {
            p.keep_last = Some(1);
            p.keep_daily = Some(1);
            p.keep_within_secs = Some(86_400);
        });
        let want: &[(&str, &[&str])] = &[
            ("a1", &["last", "daily 2026-11-21", "within 1d"]),
            ("a2", &["within 1d"]), // a1 is a's newest, b1 does not count
            ("a3", &[]),
            ("b1", &["last", "daily 2026-11-22", "within 1d"]),
            ("b2", &[]),
        ];
        check(&policy, &input, want);
        let groups: Vec<String> = apply(&policy, &input)
            .into_iter()
            .map(|d| d.group)
            .collect();
        assert_eq!(groups, ["host=a", "host=a", "host=a", "host=b", "host=b"]);
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let zeros = with(|p| {
            p.keep_last = Some(0);
            p.keep_within_secs = Some(0);
        });
        for policy in [Policy::default(), zeros] {
            assert!(policy.is_empty(), "{policy:?}");
            table(
                policy,
                &[
                    ("a", "2026-11-21T00:00:00Z", &["no policy"]),
                    ("b", "2026-11-20T00:00:00Z", &["no policy"]),
                ],
            );
        }
        assert!(!with(|p| p.keep_tags = vec!["x".into()]).is_empty());
        assert!(!with(|p| p.keep_yearly = Some(1)).is_empty());
        assert!(apply(&Policy::default(), &[]).is_empty());
    }

    #[test]
    fn output_is_by_group_then_newest_first_then_id_descending() {
        let input = [
            snap("0a", "2026-11-20T00:00:00Z", &[], "g2"),
            snap("0b", "2026-11-21T00:00:00Z", &[], "g1"),
            snap("0c", "2026-11-20T00:00:00Z", &[], "g1"),
            snap("ff", "2026-11-20T00:00:00Z", &[], "g1"),
            snap("01", "2026-11-22T00:00:00Z", &[], "g2"),
        ];
        // keep-last 2 on a time tie: the larger id counts as the newer one.
        let policy = with(|p| p.keep_last = Some(2));
        check(
            &policy,
            &input,
            &[
                ("0b", &["last"]),
                ("ff", &["last"]),
                ("0c", &[]),
                ("01", &["last"]),
                ("0a", &["last"]),
            ],
        );
    }

    #[test]
    fn parse_duration_accepts_units_and_combinations() {
        let cases = [
            ("45s", 45),
            ("90m", 5_400),
            ("12h", 43_200),
            ("30d", 2_592_000),
            ("2w", 1_209_600),
            ("6M", 15_552_000),
            ("1y", 31_536_000),
            ("1y6M", 31_536_000 + 15_552_000),
            ("2d12h", 216_000),
            (" 0s ", 0),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
    }

    #[test]
    fn parse_duration_rejects_bad_input() {
        let bad = [
            "",
            "  ",
            "30",
            "d",
            "5x",
            "1d2",
            "-1d",
            "1.5h",
            "1 d",
            "3D",
            "99999999999999999999d",
            "584942417356y",
        ];
        for text in bad {
            assert!(parse_duration(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn format_duration_is_compact_and_round_trips() {
        for (secs, text) in [
            (2_592_000, "30d"),
            (43_200, "12h"),
            (5_400, "90m"),
            (45, "45s"),
        ] {
            assert_eq!(format_duration(secs), text);
            assert_eq!(parse_duration(text), Ok(secs));
        }
        assert_eq!(format_duration(0), "0s");
    }
}
