//! Channels and phased rollouts of a release (SPEC.md §5.10): which installations are offered
//! it, by channel, by rollout bucket and by time, and whether the operator paused or withdrew it.

use std::fmt;

use upgram_core::body::{BUCKETS, DEFAULT_CHANNEL};

/// Where a release's rollout stands, as the operator left it.
///
/// Non-exhaustive: states that the server enters by itself (such as a rollout halted by its
/// failure reports) fit beside these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RolloutState {
    /// Offered by its schedule (or percentage).
    #[default]
    Rolling,
    /// Offered to no installation that does not have it yet; installations on it stay.
    Paused,
    /// Offered to none; installations on it are sent back to the release before it.
    Withdrawn,
    /// Paused by the server itself: its failure share over its last reports passed its
    /// threshold (see [`HaltRule`]). Offered like a paused release; `resume` clears it.
    Halted,
}

impl RolloutState {
    /// The name used in module files and by `upgram-server rollout status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::Paused => "paused",
            Self::Withdrawn => "withdrawn",
            Self::Halted => "halted",
        }
    }

    /// The state named `name` in a module file.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rolling" => Some(Self::Rolling),
            "paused" => Some(Self::Paused),
            "withdrawn" => Some(Self::Withdrawn),
            "halted" => Some(Self::Halted),
            _ => None,
        }
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a schedule: from `at` on, `percent` % of the buckets are offered the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutStep {
    /// Unix time (seconds) the step starts; `None`: from the start (only the first step).
    pub at: Option<u64>,
    /// The share of buckets offered, 0 to 100.
    pub percent: u8,
}

/// When a rolling release halts itself: once at least `min` of its last `window` install
/// reports are in and the share of failures among them reaches `share_permille` / 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaltRule {
    /// The failure share that halts the release, in thousandths (200: 20 %).
    pub share_permille: u16,
    /// How many of the release's most recent reports are judged.
    pub window: u32,
    /// How many reports must be in before the release is judged at all.
    pub min: u32,
}

impl Default for HaltRule {
    /// A failure share of 20 % over the last 50 reports, judged from 20 reports on.
    fn default() -> Self {
        Self { share_permille: 200, window: 50, min: 20 }
    }
}

impl HaltRule {
    /// Whether `failures` among `reports` recent reports halt the release.
    pub fn trips(&self, reports: u64, failures: u64) -> bool {
        reports > 0 && reports >= u64::from(self.min) && failures * 1000 >= u64::from(self.share_permille) * reports
    }

    /// Checks the rule: a share of 0 to 1000 thousandths, a window of at least one report and a
    /// minimum no larger than the window.
    pub fn check(&self) -> Result<(), String> {
        if self.share_permille > 1000 {
            return Err(format!("a failure share of {} is more than 1", f64::from(self.share_permille) / 1000.0));
        }
        if self.window == 0 {
            return Err("the window holds at least one report".into());
        }
        if self.min > self.window {
            return Err(format!("the minimum of {} reports is more than the window of {}", self.min, self.window));
        }
        Ok(())
    }
}

/// A release's rollout: a schedule of percentages and a state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The operator's state.
    pub state: RolloutState,
    /// Steps in ascending time order with non-decreasing percentages; empty: 100 % at once.
    pub schedule: Vec<RolloutStep>,
    /// When it halts itself on failure reports; `None`: [`HaltRule::default`].
    pub halt: Option<HaltRule>,
    /// When it was last resumed (unix time): only the install reports received since then are
    /// judged by its [`HaltRule`], so the failures that halted it do not halt it again.
    pub resumed: Option<u64>,
}

impl Rollout {
    /// The percentage in force at unix time `now`: that of the last step started, 0 before the
    /// first one, 100 without a schedule. The state does not change it.
    pub fn percent_at(&self, now: u64) -> u8 {
        if self.schedule.is_empty() {
            return 100;
        }
        self.schedule.iter().rev().find(|step| step.at.is_none_or(|at| at <= now)).map_or(0, |step| step.percent)
    }

    /// Whether an installation with `bucket` that does not have the release yet is offered it
    /// at `now`. `forced` releases bypass the schedule, not the state.
    pub fn offers(&self, forced: bool, bucket: Option<u8>, now: u64) -> bool {
        if self.state != RolloutState::Rolling {
            return false;
        }
        if forced {
            return true;
        }
        let percent = self.percent_at(now);
        percent >= BUCKETS || bucket.is_some_and(|b| b < percent)
    }

    /// How `rollout status` names where the rollout stands at `now`: the state, or `complete`
    /// once a rolling release reached 100 %.
    pub fn describe(&self, now: u64) -> &'static str {
        match self.state {
            RolloutState::Rolling if self.percent_at(now) >= BUCKETS => "complete",
            state => state.as_str(),
        }
    }

    /// Checks that a schedule grows: times ascending, only the first step without a time,
    /// percentages at most 100 and never decreasing.
    pub fn check_schedule(schedule: &[RolloutStep]) -> Result<(), String> {
        let mut previous: Option<&RolloutStep> = None;
        for step in schedule {
            if step.percent > 100 {
                return Err(format!("{}% is more than 100%", step.percent));
            }
            if let Some(previous) = previous {
                let Some(at) = step.at else {
                    return Err("only the first step may lack a time".into());
                };
                if previous.at.is_some_and(|p| p >= at) {
                    return Err(format!("the step at {} is not after the one before it", format_time(at)));
                }
                if step.percent < previous.percent {
                    return Err(format!(
                        "{}% follows {}%: a schedule only grows (set a new one to shrink it)",
                        step.percent, previous.percent
                    ));
                }
            }
            previous = Some(step);
        }
        Ok(())
    }
}

/// A schedule given on the command line (see [`parse_schedule`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule(pub Vec<RolloutStep>);

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_schedule(text).map(Schedule)
    }
}

/// The channels a release is on when nothing names them: the default channel.
pub fn default_channels() -> Vec<String> {
    vec![DEFAULT_CHANNEL.to_owned()]
}

/// Parses a schedule as operators write it: comma-separated `PERCENT%[@TIME]`, TIME in RFC 3339
/// with an offset (seconds optional), e.g. `1%@2026-12-01T10:00Z,10%@2026-12-02T10:00Z`. A step
/// without a time starts at once (only the first).
pub fn parse_schedule(text: &str) -> Result<Vec<RolloutStep>, String> {
    let mut steps = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (percent, at) = match part.split_once('@') {
            Some((percent, at)) => (percent, Some(parse_time(at.trim())?)),
            None => (part, None),
        };
        let digits = percent.trim().strip_suffix('%').unwrap_or(percent.trim());
        let percent: u8 = digits.parse().map_err(|_| format!("{part:?}: expected PERCENT% or PERCENT%@TIME"))?;
        steps.push(RolloutStep { at, percent });
    }
    Rollout::check_schedule(&steps)?;
    Ok(steps)
}

/// Writes a schedule back in the form [`parse_schedule`] reads.
pub fn format_schedule(schedule: &[RolloutStep]) -> String {
    let steps: Vec<String> = schedule
        .iter()
        .map(|step| match step.at {
            Some(at) => format!("{}%@{}", step.percent, format_time(at)),
            None => format!("{}%", step.percent),
        })
        .collect();
    steps.join(",")
}

/// Unix seconds from an RFC 3339 date and time with an offset (`Z` or `±hh:mm`); seconds may be
/// left out. Parsed by the TOML date-time parser.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let datetime: toml::value::Datetime =
        text.parse().map_err(|_| format!("{text:?} is not a date and time such as 2026-12-01T10:00Z"))?;
    datetime_to_unix(&datetime)
        .ok_or_else(|| format!("{text:?}: a date, a time and an offset (Z or +hh:mm) are needed"))
}

/// Unix seconds of a TOML offset date-time (`None` without date, time or offset, or before 1970).
pub fn datetime_to_unix(datetime: &toml::value::Datetime) -> Option<u64> {
    let (date, time, offset) = (datetime.date?, datetime.time?, datetime.offset?);
    let days = days_from_civil(i64::from(date.year), u32::from(date.month), u32::from(date.day));
    let seconds = days * 86_400 + i64::from(time.hour) * 3600 + i64::from(time.minute) * 60 + i64::from(time.second);
    let offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    u64::try_from(seconds - offset_minutes * 60).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds.
pub fn format_time(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX / 86_400);
    let rest = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-12-01T10:00Z"), Ok(1_796_119_200));
        assert_eq!(parse_time("2026-12-01T11:00+01:00"), Ok(1_796_119_200));
        assert_eq!(format_time(1_796_119_200), "2026-12-01T10:00:00Z");
        for unix in [0, 951_782_400, 1_709_164_800, 4_102_444_800] {
            assert_eq!(parse_time(&format_time(unix)), Ok(unix));
        }
        assert!(parse_time("2026-12-01").is_err());
        assert!(parse_time("2026-12-01T10:00").is_err());
    }

    #[test]
    fn schedules() {
        let steps = parse_schedule("1%@2026-12-01T10:00Z, 10%@2026-12-02T10:00Z,100%@2026-12-03T10:00Z").unwrap();
        let rollout = Rollout { state: RolloutState::Rolling, schedule: steps.clone(), halt: None, resumed: None };
        assert_eq!(rollout.percent_at(1_796_119_199), 0);
        assert_eq!(rollout.percent_at(1_796_119_200), 1);
        assert_eq!(rollout.percent_at(1_796_119_200 + 86_400), 10);
        assert_eq!(rollout.describe(1_796_119_200 + 2 * 86_400), "complete");
        assert_eq!(parse_schedule(&format_schedule(&steps)).unwrap(), steps);
        assert_eq!(parse_schedule("25%").unwrap(), vec![RolloutStep { at: None, percent: 25 }]);
        assert!(parse_schedule("50%@2026-12-02T10:00Z,10%@2026-12-03T10:00Z").is_err());
        assert!(parse_schedule("10%,20%").is_err());
        assert!(parse_schedule("101%").is_err());
        assert!(parse_schedule("ten").is_err());
    }

    #[test]
    fn buckets_below_the_percentage_are_offered() {
        let rollout = Rollout {
            state: RolloutState::Rolling,
            schedule: vec![RolloutStep { at: None, percent: 10 }],
            halt: None,
            resumed: None,
        };
        assert!(rollout.offers(false, Some(9), 0));
        assert!(!rollout.offers(false, Some(10), 0));
        assert!(!rollout.offers(false, None, 0));
        assert!(rollout.offers(true, None, 0));
        let paused = Rollout { state: RolloutState::Paused, ..rollout.clone() };
        assert!(!paused.offers(false, Some(0), 0));
        assert!(!paused.offers(true, Some(0), 0));
        let halted = Rollout { state: RolloutState::Halted, ..rollout.clone() };
        assert!(!halted.offers(false, Some(0), 0));
        assert!(!halted.offers(true, Some(0), 0));
        assert_eq!(halted.describe(0), "halted");
        assert!(Rollout::default().offers(false, None, 0));
    }
}
