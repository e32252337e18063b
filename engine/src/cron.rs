//! Cron (AO.md, "Cron"): a process whose tags name `Cron-Interval: N-<unit>` receives a cron
//! message at every interval boundary, evaluated between its scheduled messages.
//!
//! Ticks are enumerated in closed form (the `k`-th tick of a cron is at `origin + k · interval`),
//! never by stepping a clock, so the cost of finding the next tick does not depend on how long
//! a process was idle. Everything here is a pure function of the process's tags and the
//! timestamp of its own assignment (nonce 0), so the first run and every replay see the same
//! ticks.
//!
//! The rules, as the shard applies them:
//! - A process may have several crons: each `Cron-Interval` tag starts one, and the
//!   `Cron-Tag-<Name>` tags after it (until the next interval) become its message's tags
//!   (`<Name>: value`). A `Cron-Tag-*` before any interval is an error, as is an interval that
//!   does not parse; such a process is refused at spawn.
//! - Units: `block`/`blocks`, or time: `second(s)`/`sec(s)`/`s`, `minute(s)`/`min(s)`/`m`,
//!   `hour(s)`/`hr(s)`/`h`, `day(s)`/`d`, `week(s)`/`w`, `year(s)`/`yr(s)`/`y` (365.25 days),
//!   as the reference reads them; a time interval is a whole number of seconds, at least one.
//! - Time crons tick at whole seconds: `(origin_s + k · interval_s) · 1000` ms for `k ≥ 1`,
//!   where `origin_s` is the second of the process's assignment. Block crons tick at the start
//!   of every `N`-th block after the process's block, by the node's block clock
//!   ([`crate::shard::block_height_at`]: one block every two minutes).
//! - Ticks at the same moment run block crons first, then time crons from the shortest interval
//!   to the longest, ties in tag order (the reference's order).
//! - A tick at time `t` is evaluated after every scheduled message whose timestamp is `≤ t` and
//!   before every one whose timestamp is `> t`. (The reference steps a 1-second clock from the
//!   previous message and stamps ticks with that message's millisecond offset; Hewitt's ticks
//!   fall on whole seconds, which makes the enumeration exact.)

use scheduler::tags::Tag;
use scheduler::Timestamp;

use crate::shard::block_height_at;

/// Milliseconds between two blocks of the node's block clock.
const BLOCK_MS: u64 = 120_000;

/// How often a cron ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    Seconds(u64),
    Blocks(u64),
}

/// One cron of a process: its interval and the tags of its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    pub interval: Interval,
    pub tags: Vec<Tag>,
}

/// One tick: when, and which cron (its position in the schedule's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick {
    /// ms since the Unix epoch.
    pub time: u64,
    pub cron: u32,
}

/// Parses `N-unit` (as `Cron-Interval` values are written).
pub fn parse_interval(text: &str) -> Result<Interval, String> {
    let bad = || format!("Cron-Interval {text:?} is not like \"10-minutes\" or \"5-blocks\"");
    let (number, unit) = text.trim().split_once('-').ok_or_else(bad)?;
    let number: u64 = number.trim().parse().map_err(|_| bad())?;
    if number == 0 {
        return Err(format!("Cron-Interval {text:?} must be at least 1"));
    }
    let seconds_per: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        // A block is two minutes on the node's clock: bound blocks like seconds.
        "block" | "blocks" if number.checked_mul(BLOCK_MS).is_some() => return Ok(Interval::Blocks(number)),
        "block" | "blocks" => return Err(format!("Cron-Interval {text:?} is too long")),
        "second" | "seconds" | "sec" | "secs" | "s" => 1,
        "minute" | "minutes" | "min" | "mins" | "m" => 60,
        "hour" | "hours" | "hr" | "hrs" | "h" => 3_600,
        "day" | "days" | "d" => 86_400,
        "week" | "weeks" | "w" => 604_800,
        "year" | "years" | "yr" | "yrs" | "y" => 31_557_600,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds_per)
        .filter(|s| s.checked_mul(1000).is_some())
        .map(Interval::Seconds)
        .ok_or_else(|| format!("Cron-Interval {text:?} is too long"))
}

/// The crons a process's tags declare, in tag order (empty when it has none).
pub fn parse_crons(tags: &[Tag]) -> Result<Vec<Cron>, String> {
    let mut crons: Vec<Cron> = Vec::new();
    for tag in tags {
        if tag.name == "Cron-Interval" {
            crons.push(Cron {
                interval: parse_interval(&tag.value)?,
                tags: Vec::new(),
            });
        } else if let Some(name) = tag.name.strip_prefix("Cron-Tag-") {
            let cron = crons
                .last_mut()
                .ok_or_else(|| format!("{} comes before any Cron-Interval tag", tag.name))?;
            if name.is_empty() {
                return Err("a Cron-Tag- tag needs a name after the prefix".to_owned());
            }
            cron.tags.push(Tag::new(name, tag.value.as_str()));
        }
    }
    Ok(crons)
}

/// A process's crons, ordered for ticking, anchored at its assignment's time.
#[derive(Clone, Debug)]
pub struct Schedule {
    crons: Vec<Cron>,
    /// Per cron: the time of tick 0 (the origin, never itself a tick) and the step, in ms.
    grid: Vec<(u64, u64)>,
}

impl Schedule {
    /// The schedule of `crons` (as [`parse_crons`] returns them) for a process assigned at
    /// `origin`; `None` when there are no crons.
    pub fn new(crons: Vec<Cron>, origin: Timestamp) -> Option<Schedule> {
        if crons.is_empty() {
            return None;
        }
        let mut crons = crons;
        // Block crons first (in tag order), then time crons by interval (stable: tag order).
        crons.sort_by_key(|cron| match cron.interval {
            Interval::Blocks(_) => (0, 0),
            Interval::Seconds(s) => (1, s),
        });
        let origin_block = block_height_at(origin).0;
        let grid = crons
            .iter()
            .map(|cron| match cron.interval {
                Interval::Seconds(s) => (origin.0 / 1000 * 1000, s * 1000),
                Interval::Blocks(n) => (block_start(origin_block), n.saturating_mul(BLOCK_MS)),
            })
            .collect();
        Some(Schedule { crons, grid })
    }

    /// The crons in tick order ([`Tick::cron`] indexes this).
    pub fn crons(&self) -> &[Cron] {
        &self.crons
    }

    /// The first tick after `after` in (time, cron order), or the first tick of all when
    /// `after` is `None`; `None` when no tick fits in the u64 clock.
    pub fn next_after(&self, after: Option<Tick>) -> Option<Tick> {
        let mut best: Option<Tick> = None;
        for (index, &(base, step)) in self.grid.iter().enumerate() {
            let cron = index as u32;
            let k = match after {
                None => 1,
                Some(after) if after.time <= base => 1,
                Some(after) => (after.time - base).div_ceil(step).max(1),
            };
            let at = |k: u64| k.checked_mul(step).and_then(|offset| base.checked_add(offset));
            // A cron whose next tick is past the end of the clock has no more ticks; the
            // others go on.
            let Some(mut time) = at(k) else { continue };
            if let Some(after) = after {
                if time < after.time || (time == after.time && cron <= after.cron) {
                    let Some(later) = at(k + 1) else { continue };
                    time = later;
                }
            }
            let tick = Tick { time, cron };
            if best.is_none_or(|b| tick < b) {
                best = Some(tick);
            }
        }
        best
    }
}

/// When block `height` starts by the node's block clock (inverse of `block_height_at`).
fn block_start(height: u64) -> u64 {
    const KNOWN_HEIGHT: u64 = 1_310_000;
    const KNOWN_TIME_MS: u64 = 1_700_000_000_000;
    KNOWN_TIME_MS.saturating_add(height.saturating_sub(KNOWN_HEIGHT).saturating_mul(BLOCK_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
        pairs.iter().map(|(n, v)| Tag::new(*n, *v)).collect()
    }

    #[test]
    fn intervals_parse_as_the_reference_reads_them() {
        assert_eq!(parse_interval("10-seconds"), Ok(Interval::Seconds(10)));
        assert_eq!(parse_interval("1-minute"), Ok(Interval::Seconds(60)));
        assert_eq!(parse_interval("2-hours"), Ok(Interval::Seconds(7200)));
        assert_eq!(parse_interval("1-day"), Ok(Interval::Seconds(86_400)));
        assert_eq!(parse_interval("5-blocks"), Ok(Interval::Blocks(5)));
        assert_eq!(parse_interval(" 3 - Minutes "), Ok(Interval::Seconds(180)));
        for bad in [
            "",
            "10",
            "minutes",
            "0-seconds",
            "-5-seconds",
            "5-months",
            "5-fortnights",
            "99999999999999999-years",
            "200000000000000-blocks",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cron_tags_follow_their_interval() {
        let crons = parse_crons(&tags(&[
            ("Name", "x"),
            ("Cron-Interval", "5-minutes"),
            ("Cron-Tag-Action", "Tick"),
            ("Cron-Interval", "10-blocks"),
            ("Cron-Tag-Action", "Block"),
            ("Cron-Tag-Kind", "slow"),
        ]))
        .unwrap();
        assert_eq!(crons.len(), 2);
        assert_eq!(crons[0].tags, tags(&[("Action", "Tick")]));
        assert_eq!(crons[1].interval, Interval::Blocks(10));
        assert_eq!(crons[1].tags, tags(&[("Action", "Block"), ("Kind", "slow")]));
        assert!(parse_crons(&tags(&[("Cron-Tag-Action", "Tick")])).is_err());
        assert!(parse_crons(&tags(&[("Cron-Interval", "soon")])).is_err());
        assert_eq!(parse_crons(&tags(&[("Name", "x")])).unwrap(), Vec::new());
    }

    #[test]
    fn a_cron_past_the_end_of_the_clock_does_not_stop_the_others() {
        let crons = parse_crons(&tags(&[
            ("Cron-Interval", "580000000-years"),
            ("Cron-Interval", "1-minute"),
        ]))
        .unwrap();
        let schedule = Schedule::new(crons, Timestamp(1_700_000_000_000)).unwrap();
        let first = schedule.next_after(None).unwrap();
        assert_eq!(first.time, 1_700_000_060_000);
        // Past the long cron's first tick its second is beyond u64 ms: the minute cron goes on.
        let step = 580_000_000u64 * 31_557_600 * 1000;
        let past = Tick {
            time: 1_700_000_000_000 + step + 1,
            cron: 1,
        };
        let next = schedule.next_after(Some(past)).unwrap();
        assert_eq!(next.cron, 0);
        assert!(next.time > past.time && next.time - past.time <= 60_000);
    }

    /// All ticks in `(from, to]`, by stepping `next_after`.
    fn ticks(schedule: &Schedule, to: u64) -> Vec<Tick> {
        let mut out = Vec::new();
        let mut at = None;
        while let Some(tick) = schedule.next_after(at) {
            if tick.time > to {
                break;
            }
            out.push(tick);
            at = Some(tick);
        }
        out
    }

    #[test]
    fn time_ticks_fall_on_whole_seconds_after_the_origin() {
        let crons = parse_crons(&tags(&[("Cron-Interval", "2-seconds")])).unwrap();
        // Spawned at 1_700_000_000_500: ticks at …002_000, …004_000, … (the origin second is not one).
        let schedule = Schedule::new(crons, Timestamp(1_700_000_000_500)).unwrap();
        let times: Vec<u64> = ticks(&schedule, 1_700_000_007_000).iter().map(|t| t.time).collect();
        assert_eq!(times, [1_700_000_002_000, 1_700_000_004_000, 1_700_000_006_000]);
        // After an arbitrary point, the next tick is found in one step, however far.
        let far = Tick {
            time: 1_700_000_000_000 + 86_400_000 * 365 + 1,
            cron: 0,
        };
        let next = schedule.next_after(Some(far)).unwrap();
        assert_eq!(next.time, 1_700_000_000_000 + 86_400_000 * 365 + 2_000);
    }

    #[test]
    fn ticks_at_the_same_moment_run_blocks_first_then_shorter_intervals() {
        // 2-minute, 1-minute and 1-block crons from a process spawned at a block start.
        let crons = parse_crons(&tags(&[
            ("Cron-Interval", "2-minutes"),
            ("Cron-Tag-Which", "two"),
            ("Cron-Interval", "1-minute"),
            ("Cron-Tag-Which", "one"),
            ("Cron-Interval", "1-block"),
            ("Cron-Tag-Which", "block"),
        ]))
        .unwrap();
        let origin = 1_700_000_000_000;
        let schedule = Schedule::new(crons, Timestamp(origin)).unwrap();
        let which = |tick: &Tick| schedule.crons()[tick.cron as usize].tags[0].value.clone();
        let seen: Vec<(u64, String)> = ticks(&schedule, origin + 240_000)
            .iter()
            .map(|t| ((t.time - origin) / 1000, which(t)))
            .collect();
        let expected: Vec<(u64, String)> = [
            (60, "one"),
            (120, "block"),
            (120, "one"),
            (120, "two"),
            (180, "one"),
            (240, "block"),
            (240, "one"),
            (240, "two"),
        ]
        .iter()
        .map(|(s, w)| (*s, w.to_string()))
        .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_schedule_is_the_same_from_any_point() {
        let crons = parse_crons(&tags(&[
            ("Cron-Interval", "7-seconds"),
            ("Cron-Interval", "3-seconds"),
            ("Cron-Interval", "1-block"),
        ]))
        .unwrap();
        let schedule = Schedule::new(crons, Timestamp(1_700_000_123_456)).unwrap();
        let all = ticks(&schedule, 1_700_000_123_456 + 600_000);
        // Brute force: every whole second in range, each cron that divides it.
        let mut brute = Vec::new();
        let origin_s = 1_700_000_123u64;
        for second in origin_s + 1..=origin_s + 600 {
            let time = second * 1000;
            if (time - 1_700_000_000_000).is_multiple_of(120_000) && time > 1_700_000_123_456 {
                brute.push(Tick { time, cron: 0 });
            }
            for (cron, interval) in [(1u32, 3u64), (2, 7)] {
                if (second - origin_s).is_multiple_of(interval) {
                    brute.push(Tick { time, cron });
                }
            }
        }
        assert_eq!(all, brute);
        // Starting from any tick gives the rest.
        for pair in all.windows(2) {
            assert_eq!(schedule.next_after(Some(pair[0])), Some(pair[1]));
        }
    }
}
