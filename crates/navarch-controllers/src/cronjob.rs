//! The CronJob controller (batch/v1), as upstream's `cronjob` controller
//! v2, with our own cron parser ([`schedule`]).
//!
//! One task owns the local state (CronJobs and the Jobs they control, from
//! the informers) and a work queue of CronJob keys, and syncs one CronJob
//! at a time; the CronJob its status writes return replaces the local copy
//! at once. A sync:
//!
//! * deletes finished Jobs beyond `successfulJobsHistoryLimit` (3) and
//!   `failedJobsHistoryLimit` (1), oldest start first;
//! * reconciles `status.active` with the Jobs: finished ones leave it
//!   (`SawCompletedJob`), ones that are gone too (`MissingJob`, after a
//!   read of the API), unfinished Jobs it controls but does not list are
//!   reported (`UnexpectedJob`); `status.lastSuccessfulTime` follows the
//!   Jobs' `completionTime`;
//! * unless deleted, suspended, or with an unknown `timeZone` or bad
//!   schedule (events `UnknownTimeZone`, `UnparseableSchedule`,
//!   `InvalidSchedule`), finds the most recent unmet schedule time since
//!   `lastScheduleTime` (else the creation time; not before
//!   `startingDeadlineSeconds` ago): too late is `MissSchedule`, more than
//!   100 missed is `TooManyMissedTimes`; with `concurrencyPolicy: Forbid`
//!   and a Job active it is `JobAlreadyActive`; with `Replace` the active
//!   Jobs are deleted first. The Job is `<cronjob>-<minutes since the
//!   epoch>` from `spec.jobTemplate`, with a controller ownerReference and
//!   the `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation (the
//!   name is the lock: a second create for the same time finds it);
//! * sleeps until the next schedule time (plus 100 ms) with a delayed key.
//!
//! The schedule is read in `spec.timeZone` (the tz database of the
//! system), else in the local time zone of the server, as upstream reads it
//! in the controller manager's.

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::queue::{Backoff, WorkQueue};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use navarch_api::registry::lookup;
use navarch_api::{ResourceType, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "cronjob-controller";
/// The annotation with a Job's scheduled time.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream `nextScheduleDelta`: a margin for clock skew.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// More missed start times than this is "too many".
const MANY_MISSED: i64 = 100;

/// Starts the controller on `server`'s watch cache; it stops with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [jobs_rt(), cronjobs_rt()] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let c = Controller {
        server,
        recorder,
        cronjobs: HashMap::new(),
        jobs: HashMap::new(),
        children: HashMap::new(),
        queue: WorkQueue::default(),
        backoff: Backoff::default(),
        synced: HashSet::new(),
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = c.run(rx) => {}
        }
    });
}

fn jobs_rt() -> &'static ResourceType {
    lookup("batch", "v1", "jobs").expect("jobs")
}
fn cronjobs_rt() -> &'static ResourceType {
    lookup("batch", "v1", "cronjobs").expect("cronjobs")
}

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

fn parse_time(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

fn time_str(t: Timestamp) -> String {
    navarch_api::meta::rfc3339(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// A time zone by IANA name, as Go's `time.LoadLocation` finds it.
pub fn load_time_zone(name: &str) -> Result<TimeZone, String> {
    match name {
        "" | "UTC" => Ok(TimeZone::UTC),
        "Local" => Ok(TimeZone::system()),
        _ => jiff::tz::db()
            .get(name)
            .map_err(|_| format!("unknown time zone {name}")),
    }
}

/// Cron schedules as `robfig/cron/v3`'s `ParseStandard` reads them (the
/// parser upstream's CronJob controller uses), and their next times.
pub mod schedule {
    use jiff::tz::TimeZone;
    use jiff::{civil, SignedDuration, Span, Timestamp, Zoned};

    /// A parsed schedule.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Schedule {
        /// Five cron fields (or a descriptor such as `@daily`).
        Spec(Spec),
        /// `@every <duration>`: whole seconds, at least one.
        Every(i64),
    }

    /// The bits of each field; `*_star` when the field was `*` or `?`
    /// (then day-of-month and day-of-week must both match, otherwise
    /// either does).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Spec {
        pub minute: u64,
        pub hour: u64,
        pub dom: u64,
        pub month: u64,
        pub dow: u64,
        pub dom_star: bool,
        pub dow_star: bool,
    }

    struct Bounds {
        min: u32,
        max: u32,
        names: &'static [&'static str],
    }

    const MINUTES: Bounds = Bounds {
        min: 0,
        max: 59,
        names: &[],
    };
    const HOURS: Bounds = Bounds {
        min: 0,
        max: 23,
        names: &[],
    };
    const DOM: Bounds = Bounds {
        min: 1,
        max: 31,
        names: &[],
    };
    const MONTHS: Bounds = Bounds {
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    };
    /// 7 is Sunday too (robfig allows 0-6 only; our API validation lets 7
    /// through, and every other cron reads it as Sunday).
    const DOW: Bounds = Bounds {
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    };

    /// Parses `spec`: an optional `TZ=<zone> ` or `CRON_TZ=<zone> ` prefix
    /// (returned as the second value), then five fields or a descriptor.
    pub fn parse(spec: &str) -> Result<(Schedule, Option<String>), String> {
        let mut spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut tz = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let eq = spec.find('=').expect("prefix has =");
            let Some(sp) = spec.find(' ') else {
                return Err(format!(
                    "provided bad location {}: no schedule after it",
                    &spec[eq + 1..]
                ));
            };
            tz = Some(spec[eq + 1..sp].to_string());
            spec = spec[sp..].trim();
        }
        if spec.starts_with('@') {
            return descriptor(spec).map(|s| (s, tz));
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let (minute, _) = field(fields[0], &MINUTES)?;
        let (hour, _) = field(fields[1], &HOURS)?;
        let (dom, dom_star) = field(fields[2], &DOM)?;
        let (month, _) = field(fields[3], &MONTHS)?;
        let (mut dow, dow_star) = field(fields[4], &DOW)?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        Ok((
            Schedule::Spec(Spec {
                minute,
                hour,
                dom,
                month,
                dow,
                dom_star,
                dow_star,
            }),
            tz,
        ))
    }

    fn bits(min: u32, max: u32, step: u32) -> u64 {
        let mut b = 0u64;
        let mut i = min;
        while i <= max {
            b |= 1 << i;
            i += step;
        }
        b
    }

    fn descriptor(d: &str) -> Result<Schedule, String> {
        let all = |b: &Bounds| bits(b.min, b.max, 1);
        let spec = |minute, hour, dom, month, dow, dom_star, dow_star| {
            Schedule::Spec(Spec {
                minute,
                hour,
                dom,
                month,
                dow,
                dom_star,
                dow_star,
            })
        };
        let dow_all = bits(0, 6, 1);
        Ok(match d {
            "@yearly" | "@annually" => spec(1, 1, 1 << 1, 1 << 1, dow_all, false, true),
            "@monthly" => spec(1, 1, 1 << 1, all(&MONTHS), dow_all, false, true),
            "@weekly" => spec(1, 1, all(&DOM), all(&MONTHS), 1, true, false),
            "@daily" | "@midnight" => spec(1, 1, all(&DOM), all(&MONTHS), dow_all, true, true),
            "@hourly" => spec(1, all(&HOURS), all(&DOM), all(&MONTHS), dow_all, true, true),
            _ => match d.strip_prefix("@every ") {
                Some(dur) => {
                    let nanos = go_duration(dur)
                        .map_err(|e| format!("failed to parse duration {dur}: {e}"))?;
                    // At least a second, whole seconds.
                    Schedule::Every((nanos / 1_000_000_000).max(1) as i64)
                }
                None => return Err(format!("unrecognized descriptor: {d}")),
            },
        })
    }

    /// A comma-separated list of ranges: its bits, and whether it was `*`
    /// or `?` (a step of 1 keeps that).
    fn field(f: &str, b: &Bounds) -> Result<(u64, bool), String> {
        let mut out = 0;
        let mut star = false;
        for r in f.split(',').filter(|r| !r.is_empty()) {
            let (bits, s) = range(r, b)?;
            out |= bits;
            star |= s;
        }
        Ok((out, star))
    }

    fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
        let parts: Vec<&str> = expr.split('/').collect();
        let low_high: Vec<&str> = parts[0].split('-').collect();
        let single = low_high.len() == 1;
        let (start, mut end, mut star) = if low_high[0] == "*" || low_high[0] == "?" {
            (b.min, b.max, true)
        } else {
            let start = int_or_name(low_high[0], b.names, b.min)?;
            let end = match low_high.len() {
                1 => start,
                2 => int_or_name(low_high[1], b.names, b.min)?,
                _ => return Err(format!("too many hyphens: {expr}")),
            };
            (start, end, false)
        };
        let step = match parts.len() {
            1 => 1,
            2 => {
                let step = int(parts[1])?;
                // "N/step" means "N-max/step".
                if single {
                    end = b.max;
                }
                if step > 1 {
                    star = false;
                }
                step
            }
            _ => return Err(format!("too many slashes: {expr}")),
        };
        if start < b.min {
            return Err(format!(
                "beginning of range ({start}) below minimum ({}): {expr}",
                b.min
            ));
        }
        if end > b.max {
            return Err(format!(
                "end of range ({end}) above maximum ({}): {expr}",
                b.max
            ));
        }
        if start > end {
            return Err(format!(
                "beginning of range ({start}) beyond end of range ({end}): {expr}"
            ));
        }
        if step == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
        Ok((bits(start, end, step), star))
    }

    fn int_or_name(v: &str, names: &[&str], min: u32) -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + min);
        }
        int(v)
    }

    fn int(v: &str) -> Result<u32, String> {
        let n: i64 = v.parse().map_err(|_| {
            format!("failed to parse int from {v}: strconv.Atoi: parsing \"{v}\": invalid syntax")
        })?;
        if n < 0 {
            return Err(format!("negative number ({n}) not allowed: {v}"));
        }
        u32::try_from(n).map_err(|_| format!("failed to parse int from {v}: value out of range"))
    }

    /// Go's `time.ParseDuration`, in nanoseconds (negative durations are
    /// read, then `@every` makes them a second).
    fn go_duration(s: &str) -> Result<i128, String> {
        let bad = || format!("time: invalid duration \"{s}\"");
        let (neg, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Ok(0);
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let num = &rest[..num_end];
            if num.is_empty() || num == "." {
                return Err(bad());
            }
            let value: f64 = num.parse().map_err(|_| bad())?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_end];
            rest = &rest[unit_end..];
            let scale = match unit {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "" => return Err(format!("time: missing unit in duration \"{s}\"")),
                u => return Err(format!("time: unknown unit \"{u}\" in duration \"{s}\"")),
            };
            total += value * scale;
        }
        let n = total.round() as i128;
        Ok(if neg { -n } else { n })
    }

    impl Spec {
        fn day_matches(&self, z: &Zoned) -> bool {
            let dom = self.dom & (1 << z.day()) != 0;
            let dow = self.dow & (1 << z.weekday().to_sunday_zero_offset()) != 0;
            if self.dom_star || self.dow_star {
                dom && dow
            } else {
                dom || dow
            }
        }
    }

    fn at(tz: &TimeZone, y: i16, m: i8, d: i8, h: i8) -> Option<Zoned> {
        civil::date(y, m, d)
            .at(h, 0, 0, 0)
            .to_zoned(tz.clone())
            .ok()
    }

    fn truncate(z: &Zoned, secs: i64) -> Option<Zoned> {
        let s = z.timestamp().as_second();
        Timestamp::from_second(s - s.rem_euclid(secs))
            .ok()
            .map(|t| t.to_zoned(z.time_zone().clone()))
    }

    impl Schedule {
        /// The first time after `t` (robfig's `Next`, read in `tz`), or
        /// `None` when there is none within five years.
        pub fn next(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
            match self {
                Schedule::Every(secs) => {
                    let nanos = t.subsec_nanosecond();
                    t.checked_add(SignedDuration::new(*secs, -nanos)).ok()
                }
                Schedule::Spec(s) => s.next(t, tz),
            }
        }
    }

    impl Spec {
        fn next(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
            let mut z = t.to_zoned(tz.clone());
            // Start at the upcoming second.
            z = z
                .checked_add(SignedDuration::new(1, -z.subsec_nanosecond()))
                .ok()?;
            let mut added = false;
            let year_limit = z.year() + 5;
            'wrap: loop {
                if z.year() > year_limit {
                    return None;
                }
                while self.month & (1 << z.month()) == 0 {
                    if !added {
                        added = true;
                        z = at(tz, z.year(), z.month(), 1, 0)?;
                    }
                    z = z.checked_add(Span::new().months(1)).ok()?;
                    if z.month() == 1 {
                        continue 'wrap;
                    }
                }
                while !self.day_matches(&z) {
                    if !added {
                        added = true;
                        z = at(tz, z.year(), z.month(), z.day(), 0)?;
                    }
                    z = z.checked_add(Span::new().days(1)).ok()?;
                    // Midnight may not exist (DST): back to it, or on.
                    let h = z.hour() as i64;
                    if h != 0 {
                        let fix = if h > 12 { 24 - h } else { -h };
                        z = z.checked_add(SignedDuration::from_hours(fix)).ok()?;
                    }
                    if z.day() == 1 {
                        continue 'wrap;
                    }
                }
                while self.hour & (1 << z.hour()) == 0 {
                    if !added {
                        added = true;
                        z = at(tz, z.year(), z.month(), z.day(), z.hour())?;
                    }
                    z = z.checked_add(SignedDuration::from_hours(1)).ok()?;
                    if z.hour() == 0 {
                        continue 'wrap;
                    }
                }
                while self.minute & (1 << z.minute()) == 0 {
                    if !added {
                        added = true;
                        z = truncate(&z, 60)?;
                    }
                    z = z.checked_add(SignedDuration::from_mins(1)).ok()?;
                    if z.minute() == 0 {
                        continue 'wrap;
                    }
                }
                while z.second() != 0 {
                    if !added {
                        added = true;
                        z = truncate(&z, 1)?;
                    }
                    z = z.checked_add(SignedDuration::from_secs(1)).ok()?;
                    if z.second() == 0 {
                        continue 'wrap;
                    }
                }
                return Some(z.timestamp());
            }
        }
    }
}

use schedule::Schedule;

// ----- CronJobs and their Jobs -----------------------------------------------------

type Key = (String, String);

/// What a sync reads of a CronJob.
#[derive(Debug, Clone)]
struct CronJob {
    obj: Value,
    rv: i64,
    uid: String,
    namespace: String,
    name: String,
    created: Timestamp,
    schedule: String,
    time_zone: Option<String>,
    suspend: bool,
    starting_deadline: Option<i64>,
    concurrency: String,
    successful_limit: Option<i64>,
    failed_limit: Option<i64>,
    deleting: bool,
    /// `status.active`: object references to Jobs.
    active: Vec<Value>,
    last_schedule: Option<Timestamp>,
    last_successful: Option<Timestamp>,
}

impl CronJob {
    fn from_json(v: Value, rv: i64) -> CronJob {
        let m = &v["metadata"];
        let spec = &v["spec"];
        let st = &v["status"];
        CronJob {
            rv,
            uid: m["uid"].as_str().unwrap_or("").into(),
            namespace: m["namespace"].as_str().unwrap_or("").into(),
            name: m["name"].as_str().unwrap_or("").into(),
            created: parse_time(&m["creationTimestamp"]).unwrap_or(Timestamp::UNIX_EPOCH),
            schedule: spec["schedule"].as_str().unwrap_or("").into(),
            time_zone: spec["timeZone"].as_str().map(str::to_string),
            suspend: spec["suspend"].as_bool().unwrap_or(false),
            starting_deadline: spec["startingDeadlineSeconds"].as_i64(),
            concurrency: spec["concurrencyPolicy"].as_str().unwrap_or("Allow").into(),
            successful_limit: spec["successfulJobsHistoryLimit"].as_i64(),
            failed_limit: spec["failedJobsHistoryLimit"].as_i64(),
            deleting: m["deletionTimestamp"].is_string(),
            active: st["active"].as_array().cloned().unwrap_or_default(),
            last_schedule: parse_time(&st["lastScheduleTime"]),
            last_successful: parse_time(&st["lastSuccessfulTime"]),
            obj: v,
        }
    }

    fn obj_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: "CronJob",
            api_version: "batch/v1",
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    fn in_active(&self, uid: &str) -> bool {
        self.active.iter().any(|r| r["uid"] == uid)
    }

    fn in_active_by_name(&self, name: &str) -> bool {
        self.active
            .iter()
            .any(|r| r["name"] == name && r["namespace"] == self.namespace.as_str())
    }

    fn remove_active(&mut self, uid: &str) {
        self.active.retain(|r| r["uid"] != uid);
    }

    /// The status as it now stands (the rest of the object's status kept).
    fn status_json(&self) -> Value {
        let mut s = self.obj["status"].as_object().cloned().unwrap_or_default();
        if self.active.is_empty() {
            s.remove("active");
        } else {
            s.insert("active".into(), Value::Array(self.active.clone()));
        }
        for (k, t) in [
            ("lastScheduleTime", self.last_schedule),
            ("lastSuccessfulTime", self.last_successful),
        ] {
            match t {
                Some(t) => s.insert(k.into(), json!(time_str(t))),
                None => s.remove(k),
            };
        }
        Value::Object(s)
    }
}

/// What a sync reads of a Job a CronJob controls.
#[derive(Debug, Clone)]
struct ChildJob {
    name: String,
    uid: String,
    /// `Complete` or `Failed` when that condition is `True`.
    finished: Option<&'static str>,
    start: Option<Timestamp>,
    completion: Option<Timestamp>,
    /// The controller ownerReference's (kind, name, uid).
    controller: Option<(String, String, String)>,
}

impl ChildJob {
    fn from_json(v: &Value) -> ChildJob {
        let finished = v["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find_map(|c| match (c["type"].as_str(), c["status"].as_str()) {
                    (Some("Complete"), Some("True")) => Some("Complete"),
                    (Some("Failed"), Some("True")) => Some("Failed"),
                    _ => None,
                })
        });
        let controller = v["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["controller"] == true))
            .map(|r| {
                let s = |f: &str| r[f].as_str().unwrap_or("").to_string();
                (s("kind"), s("name"), s("uid"))
            });
        ChildJob {
            name: v["metadata"]["name"].as_str().unwrap_or("").into(),
            uid: v["metadata"]["uid"].as_str().unwrap_or("").into(),
            finished,
            start: parse_time(&v["status"]["startTime"]),
            completion: parse_time(&v["status"]["completionTime"]),
            controller,
        }
    }

    fn parent(&self) -> Option<&str> {
        self.controller
            .as_ref()
            .filter(|(k, _, _)| k == "CronJob")
            .map(|(_, n, _)| n.as_str())
    }
}

// ----- scheduling (pure, on an injected clock) -----------------------------------------

/// How many schedule times were missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

/// Upstream `mostRecentScheduleTime`: the earliest time considered (last
/// schedule, else creation; with `deadline`, not before
/// `startingDeadlineSeconds` ago), the most recent schedule time not after
/// `now`, and how many were missed.
fn most_recent(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
    deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = cj.last_schedule.unwrap_or(cj.created);
    if let (true, Some(sds)) = (deadline, cj.starting_deadline) {
        let d = now - SignedDuration::from_secs(sds);
        if d > earliest {
            earliest = d;
        }
    }
    let too_close = || "time difference between two schedules is less than 1 second".to_string();
    let Some(t1) = sched.next(earliest, tz) else {
        return Err(too_close());
    };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = sched.next(t1, tz) else {
        return Err(too_close());
    };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2
        .duration_since(t1)
        .round(jiff::Unit::Second)
        .map_err(|e| e.to_string())?;
    let between = between.as_secs();
    if between < 1 {
        return Err(too_close());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    let potential = t1 + SignedDuration::from_secs((missed - 2) * between);
    let mut recent = None;
    let mut t = sched.next(potential, tz);
    while let Some(x) = t.filter(|x| *x <= now) {
        recent = Some(x);
        t = sched.next(x, tz);
    }
    let m = if missed > MANY_MISSED {
        Missed::Many
    } else if missed > 0 {
        Missed::Few
    } else {
        Missed::None
    };
    Ok((earliest, recent, m))
}

/// Upstream `nextScheduleTimeDuration`: how long until the next schedule
/// time (plus 100 ms); `None` when there is none.
fn next_duration(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
) -> Option<Duration> {
    let from = match most_recent(cj, now, sched, tz, false) {
        Err(_) => now,
        Ok((_, Some(t), _)) => t,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let next = sched.next(from, tz)?;
    let d = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(d + NEXT_SCHEDULE_DELTA)
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`.
fn job_name(cj: &str, scheduled: Timestamp) -> String {
    format!("{cj}-{}", scheduled.as_second().div_euclid(60))
}

/// What to do about the schedule, once `status.active` is reconciled.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// Nothing to start; sync again after this long, if ever.
    Wait(Option<Duration>),
    /// Start the Job for this time (deleting the active ones first when
    /// `replace`), then sync again after this long.
    Start { scheduled: Timestamp, replace: bool },
}

/// An event: warning?, reason, message.
type Event = (bool, &'static str, String);

/// Upstream `syncCronJob` after the reconciliation of `status.active`:
/// what to start now, and the events on the way.
fn decide(cj: &CronJob, now: Timestamp, local: &TimeZone) -> (Decision, Vec<Event>) {
    let mut events = Vec::new();
    if cj.deleting {
        return (Decision::Wait(None), events);
    }
    let mut tz = local.clone();
    if let Some(name) = &cj.time_zone {
        match load_time_zone(name) {
            Ok(z) => tz = z,
            Err(e) => {
                events.push((
                    true,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {name:?}: {e}"),
                ));
                return (Decision::Wait(None), events);
            }
        }
    }
    if cj.suspend {
        return (Decision::Wait(None), events);
    }
    if cj.schedule.contains("TZ") {
        events.push((true, "UnsupportedSchedule", format!("CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details", cj.schedule)));
    }
    let sched = match schedule::parse(&cj.schedule) {
        Ok((s, prefix)) => {
            if let Some(name) = prefix {
                match load_time_zone(&name) {
                    Ok(z) => tz = z,
                    Err(e) => {
                        events.push((
                            true,
                            "UnparseableSchedule",
                            format!(
                                "unparseable schedule: {:?} : provided bad location {name}: {e}",
                                cj.schedule
                            ),
                        ));
                        return (Decision::Wait(None), events);
                    }
                }
            }
            s
        }
        Err(e) => {
            events.push((
                true,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", cj.schedule),
            ));
            return (Decision::Wait(None), events);
        }
    };
    let requeue = || Decision::Wait(next_duration(cj, now, &sched, &tz));
    let scheduled = match most_recent(cj, now, &sched, &tz, true) {
        Err(e) => {
            events.push((
                true,
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", cj.schedule),
            ));
            return (Decision::Wait(None), events);
        }
        Ok((_, None, _)) => return (requeue(), events),
        Ok((_, Some(t), missed)) => {
            if missed == Missed::Many {
                events.push((true, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into()));
            }
            t
        }
    };
    if let Some(sds) = cj.starting_deadline {
        if scheduled + SignedDuration::from_secs(sds) < now {
            let when = scheduled
                .strftime("%a, %d %b %Y %H:%M:%S +0000")
                .to_string();
            events.push((
                true,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {when}"),
            ));
            return (requeue(), events);
        }
    }
    if cj.in_active_by_name(&job_name(&cj.name, scheduled)) || cj.last_schedule == Some(scheduled) {
        return (requeue(), events);
    }
    if cj.concurrency == "Forbid" && !cj.active.is_empty() {
        events.push((
            false,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into(),
        ));
        return (requeue(), events);
    }
    (
        Decision::Start {
            scheduled,
            replace: cj.concurrency == "Replace",
        },
        events,
    )
}

/// The time zone a CronJob's schedule is read in, if it loads.
fn zone_of(cj: &CronJob, local: &TimeZone) -> Option<TimeZone> {
    if let Ok((_, Some(prefix))) = schedule::parse(&cj.schedule) {
        return load_time_zone(&prefix).ok();
    }
    match &cj.time_zone {
        Some(n) => load_time_zone(n).ok(),
        None => Some(local.clone()),
    }
}

/// Upstream `getJobFromTemplate2`.
fn job_from_template(cj: &CronJob, scheduled: Timestamp) -> Value {
    let jt = &cj.obj["spec"]["jobTemplate"];
    let mut annotations = jt["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    // In the CronJob's time zone (UTC without one), RFC 3339.
    let tz = load_time_zone(cj.time_zone.as_deref().unwrap_or("")).unwrap_or(TimeZone::UTC);
    let z = scheduled.to_zoned(tz);
    let stamp = if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    };
    annotations.insert(SCHEDULED_TIMESTAMP.into(), json!(stamp));
    let mut meta = json!({
        "name": job_name(&cj.name, scheduled),
        "namespace": cj.namespace,
        "annotations": annotations,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": cj.name,
            "uid": cj.uid, "controller": true, "blockOwnerDeletion": true}],
    });
    if let Some(l) = jt["metadata"]["labels"]
        .as_object()
        .filter(|l| !l.is_empty())
    {
        meta["labels"] = Value::Object(l.clone());
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": jt["spec"]})
}

/// Upstream `byJobStartTime`: started before not started, earlier first,
/// then by name.
fn by_start(a: &ChildJob, b: &ChildJob) -> std::cmp::Ordering {
    match (a.start, b.start) {
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (x, y) if x == y => a.name.cmp(&b.name),
        (x, y) => x.cmp(&y),
    }
}

/// Upstream `cleanupFinishedJobs`: the finished Jobs beyond the history
/// limits, oldest first.
fn history_to_delete(cj: &CronJob, jobs: &[ChildJob]) -> Vec<ChildJob> {
    let mut out = Vec::new();
    for (kind, limit) in [
        ("Complete", cj.successful_limit),
        ("Failed", cj.failed_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut js: Vec<&ChildJob> = jobs.iter().filter(|j| j.finished == Some(kind)).collect();
        let n = js.len() as i64 - limit;
        if n <= 0 {
            continue;
        }
        js.sort_by(|a, b| by_start(a, b));
        out.extend(js.into_iter().take(n as usize).cloned());
    }
    out
}

// ----- the controller task --------------------------------------------------------------

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    cronjobs: HashMap<Key, CronJob>,
    jobs: HashMap<Key, ChildJob>,
    /// Jobs by the (namespace, name) of the CronJob controlling them.
    children: HashMap<Key, BTreeSet<String>>,
    queue: WorkQueue<Key>,
    backoff: Backoff<Key>,
    synced: HashSet<&'static str>,
}

impl Controller {
    async fn run(mut self, mut informers: mpsc::Receiver<Batch>) {
        loop {
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            let ready = ["Job", "CronJob"].iter().all(|k| self.synced.contains(k));
            if ready {
                if let Some(key) = self.queue.pop() {
                    match self.sync(&key).await {
                        Ok(()) => self.backoff.forget(&key),
                        Err(e) => {
                            tracing::debug!(cronjob = %key.1, error = %e, "cronjob sync failed");
                            let delay = self.backoff.fail(key.clone());
                            self.queue.add_after(key, delay);
                        }
                    }
                    continue;
                }
            }
            let wake = self.queue.next_wake();
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn apply(&mut self, batch: Batch) {
        let kind = batch.rt.kind;
        for change in batch.changes {
            match change {
                Change::Synced => {
                    self.synced.insert(kind);
                }
                Change::Upsert(o) => self.upsert(kind, &o),
                Change::Delete(o) => self.delete(kind, &o),
            }
        }
    }

    fn upsert(&mut self, kind: &str, o: &Arc<CachedObject>) {
        let key = (o.namespace.clone(), o.name.clone());
        if kind == "Job" {
            let job = ChildJob::from_json(&o.shared_value());
            self.unindex_job(&key);
            if let Some(p) = self.parent_key(&o.namespace, &job) {
                self.queue.add(p);
            }
            if let Some(parent) = job.parent() {
                self.children
                    .entry((o.namespace.clone(), parent.to_string()))
                    .or_default()
                    .insert(o.name.clone());
            }
            self.jobs.insert(key, job);
        } else {
            let cj = CronJob::from_json(o.value(), o.mod_revision);
            if let Some(old) = self.cronjobs.get(&key) {
                if old.uid == cj.uid && old.rv >= cj.rv {
                    return;
                }
                if old.uid == cj.uid
                    && (old.schedule != cj.schedule || old.time_zone != cj.time_zone)
                {
                    // A new schedule takes effect at its next time.
                    let local = TimeZone::system();
                    let next = match (schedule::parse(&cj.schedule), zone_of(&cj, &local)) {
                        (Ok((s, _)), Some(tz)) => next_duration(&cj, Timestamp::now(), &s, &tz),
                        _ => Some(Duration::ZERO),
                    };
                    self.cronjobs.insert(key.clone(), cj);
                    match next {
                        Some(d) => self.queue.add_after(key, d),
                        None => self.queue.add(key),
                    }
                    return;
                }
            }
            self.cronjobs.insert(key.clone(), cj);
            self.queue.add(key);
        }
    }

    fn delete(&mut self, kind: &str, o: &Arc<CachedObject>) {
        let key = (o.namespace.clone(), o.name.clone());
        if kind == "Job" {
            if let Some(job) = self.unindex_job(&key) {
                if let Some(p) = self.parent_key(&o.namespace, &job) {
                    self.queue.add(p);
                }
            }
        } else {
            self.cronjobs.remove(&key);
            self.backoff.forget(&key);
        }
    }

    fn unindex_job(&mut self, key: &Key) -> Option<ChildJob> {
        let job = self.jobs.remove(key)?;
        if let Some(parent) = job.parent() {
            let pk = (key.0.clone(), parent.to_string());
            if let Some(s) = self.children.get_mut(&pk) {
                s.remove(&key.1);
                if s.is_empty() {
                    self.children.remove(&pk);
                }
            }
        }
        Some(job)
    }

    /// The CronJob controlling `job` (name and uid must match).
    fn parent_key(&self, ns: &str, job: &ChildJob) -> Option<Key> {
        let (kind, name, uid) = job.controller.as_ref()?;
        if kind != "CronJob" {
            return None;
        }
        let key = (ns.to_string(), name.clone());
        self.cronjobs
            .get(&key)
            .filter(|c| &c.uid == uid)
            .map(|_| key)
    }

    fn record(&self, cj: &CronJob, events: Vec<Event>) {
        let r = cj.obj_ref();
        for (warning, reason, msg) in events {
            if warning {
                self.recorder.warning(&r, reason, msg);
            } else {
                self.recorder.normal(&r, reason, msg);
            }
        }
    }

    /// Deletes a Job (background propagation) and takes it out of the
    /// active list (upstream `deleteJob`).
    async fn delete_job(&self, cj: &mut CronJob, name: &str, uid: &str) -> bool {
        let opts = DeleteOptions {
            propagation: Some("Background".into()),
            ..Default::default()
        };
        match self
            .server
            .delete(jobs_rt(), Some(&cj.namespace), name, &opts)
            .await
        {
            Ok(_) => {
                cj.remove_active(uid);
                self.recorder.normal(
                    &cj.obj_ref(),
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                );
                true
            }
            Err(e) => {
                self.recorder.warning(
                    &cj.obj_ref(),
                    "FailedDelete",
                    format!("Deleted job: {}", e.message),
                );
                false
            }
        }
    }

    async fn sync(&mut self, key: &Key) -> anyhow::Result<()> {
        let Some(mut cj) = self.cronjobs.get(key).cloned() else {
            return Ok(());
        };
        let jobs: Vec<ChildJob> = self
            .children
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|n| self.jobs.get(&(key.0.clone(), n.clone())))
            .cloned()
            .collect();
        let before = cj.status_json();
        let now = Timestamp::now();
        // History limits.
        for j in history_to_delete(&cj, &jobs) {
            self.delete_job(&mut cj, &j.name, &j.uid).await;
        }
        // Active list against the Jobs.
        let mut events = Vec::new();
        for j in &jobs {
            let found = cj.in_active(&j.uid);
            if !found && j.finished.is_none() {
                events.push((
                    true,
                    "UnexpectedJob",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name
                    ),
                ));
            } else if found && j.finished.is_some() {
                cj.remove_active(&j.uid);
                events.push((
                    false,
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, status: {}",
                        j.name,
                        j.finished.unwrap_or("")
                    ),
                ));
            } else if j.finished == Some("Complete") {
                if let Some(t) = j.completion {
                    if cj.last_successful.is_none_or(|l| t > l) {
                        cj.last_successful = Some(t);
                    }
                }
            }
        }
        let known: HashSet<&str> = jobs.iter().map(|j| j.uid.as_str()).collect();
        let missing: Vec<(String, String)> = cj
            .active
            .iter()
            .filter(|r| !known.contains(r["uid"].as_str().unwrap_or("")))
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").to_string(),
                    r["uid"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        for (name, uid) in missing {
            // Read from the API: the informer may just be behind.
            match self
                .server
                .read(jobs_rt(), Some(&cj.namespace), &name)
                .await
            {
                Err(e) if e.code == 404 => {
                    events.push((
                        false,
                        "MissingJob",
                        format!("Active job went missing: {name}"),
                    ));
                    cj.remove_active(&uid);
                }
                Err(e) => {
                    self.record(&cj, events);
                    return Err(anyhow::anyhow!("reading job {name}: {}", e.message));
                }
                Ok(_) => {}
            }
        }
        self.record(&cj, events);
        let local = TimeZone::system();
        let (decision, events) = decide(&cj, now, &local);
        self.record(&cj, events);
        let mut result = Ok(());
        let mut requeue = None;
        match decision {
            Decision::Wait(d) => requeue = d,
            Decision::Start { scheduled, replace } => {
                result = self.start(&mut cj, scheduled, replace).await;
                if result.is_ok() {
                    let tz = zone_of(&cj, &local).unwrap_or(local);
                    if let Ok((s, _)) = schedule::parse(&cj.schedule) {
                        requeue = next_duration(&cj, now, &s, &tz);
                    }
                }
            }
        }
        let status = cj.status_json();
        if status != before {
            let mut body = cj.obj.clone();
            body["status"] = status;
            match self
                .server
                .update(
                    cronjobs_rt(),
                    Some(&key.0),
                    &key.1,
                    Some(Subresource::Status),
                    body,
                    &write_options(),
                )
                .await
            {
                Ok(w) => {
                    let rv = w.object["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if self
                        .cronjobs
                        .get(key)
                        .is_some_and(|c| c.uid == cj.uid && c.rv < rv)
                    {
                        self.cronjobs
                            .insert(key.clone(), CronJob::from_json(w.object, rv));
                    }
                }
                Err(e) => return Err(anyhow::anyhow!("updating the status: {}", e.message)),
            }
        }
        if let Some(d) = requeue {
            self.queue.add_after(key.clone(), d);
        }
        result
    }

    /// Replaces (`Replace`) the active Jobs, creates the one for
    /// `scheduled` and records it in the status.
    async fn start(
        &self,
        cj: &mut CronJob,
        scheduled: Timestamp,
        replace: bool,
    ) -> anyhow::Result<()> {
        if replace {
            let active: Vec<(String, String)> = cj
                .active
                .iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_string(),
                        r["uid"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            for (name, uid) in active {
                if let Err(e) = self
                    .server
                    .read(jobs_rt(), Some(&cj.namespace), &name)
                    .await
                {
                    self.recorder.warning(
                        &cj.obj_ref(),
                        "FailedGet",
                        format!("Get job: {}", e.message),
                    );
                    anyhow::bail!("reading job {name}: {}", e.message);
                }
                if !self.delete_job(cj, &name, &uid).await {
                    anyhow::bail!("could not replace job {}/{name}", cj.namespace);
                }
            }
        }
        let req = job_from_template(cj, scheduled);
        let name = req["metadata"]["name"].as_str().unwrap_or("").to_string();
        let job = match self
            .server
            .create(jobs_rt(), Some(&cj.namespace), req, &write_options())
            .await
        {
            Ok(w) => {
                self.recorder.normal(
                    &cj.obj_ref(),
                    "SuccessfulCreate",
                    format!("Created job {name}"),
                );
                w.object
            }
            Err(e) if e.code == 403 && e.message.contains("is being terminated") => {
                anyhow::bail!("creating job {name}: {}", e.message);
            }
            Err(e) if e.code == 409 => {
                // Created before (by us, then the status write failed, or
                // by someone else).
                let (job, _) = self
                    .server
                    .read(jobs_rt(), Some(&cj.namespace), &name)
                    .await
                    .map_err(|e| anyhow::anyhow!("reading job {name}: {}", e.message))?;
                let ours = ChildJob::from_json(&job)
                    .controller
                    .is_some_and(|(k, _, u)| k == "CronJob" && u == cj.uid);
                if !ours || cj.in_active(job["metadata"]["uid"].as_str().unwrap_or("")) {
                    return Ok(());
                }
                tracing::info!(cronjob = %cj.name, job = %name, "job already exists");
                job
            }
            Err(e) => {
                self.recorder.warning(
                    &cj.obj_ref(),
                    "FailedCreate",
                    format!("Error creating job: {}", e.message),
                );
                anyhow::bail!("creating job {name}: {}", e.message);
            }
        };
        let m = &job["metadata"];
        cj.active.push(
            json!({"kind": "Job", "namespace": m["namespace"], "name": m["name"],
            "uid": m["uid"], "apiVersion": "batch/v1", "resourceVersion": m["resourceVersion"]}),
        );
        cj.last_schedule = Some(scheduled);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::schedule::parse;
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    /// The next `n` times after `from`.
    fn nexts(sched: &str, from: &str, tz: &TimeZone, n: usize) -> Vec<String> {
        let (s, _) = parse(sched).unwrap();
        let mut out = Vec::new();
        let mut at = t(from);
        for _ in 0..n {
            at = s.next(at, tz).unwrap();
            out.push(
                at.to_zoned(tz.clone())
                    .strftime("%Y-%m-%d %H:%M %a")
                    .to_string(),
            );
        }
        out
    }

    #[test]
    fn schedules_from_the_kubernetes_docs() {
        // kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/
        let z = utc();
        let from = "2024-01-01T00:00:00Z"; // a Monday
        assert_eq!(
            nexts("@yearly", from, &z, 2),
            ["2025-01-01 00:00 Wed", "2026-01-01 00:00 Thu"]
        );
        assert_eq!(nexts("@annually", from, &z, 1), ["2025-01-01 00:00 Wed"]);
        assert_eq!(
            nexts("@monthly", from, &z, 2),
            ["2024-02-01 00:00 Thu", "2024-03-01 00:00 Fri"]
        );
        assert_eq!(
            nexts("@weekly", from, &z, 2),
            ["2024-01-07 00:00 Sun", "2024-01-14 00:00 Sun"]
        );
        assert_eq!(nexts("@daily", from, &z, 1), ["2024-01-02 00:00 Tue"]);
        assert_eq!(nexts("@midnight", from, &z, 1), ["2024-01-02 00:00 Tue"]);
        assert_eq!(
            nexts("@hourly", from, &z, 2),
            ["2024-01-01 01:00 Mon", "2024-01-01 02:00 Mon"]
        );
        // "0 3 * * 1": every Monday at 3 AM.
        assert_eq!(
            nexts("0 3 * * 1", from, &z, 2),
            ["2024-01-01 03:00 Mon", "2024-01-08 03:00 Mon"]
        );
        // The docs' example: Friday the 13th, or any day that is a Friday
        // or a 13th ("0 0 13 * 5").
        assert_eq!(
            nexts("0 0 13 * 5", from, &z, 4),
            [
                "2024-01-05 00:00 Fri",
                "2024-01-12 00:00 Fri",
                "2024-01-13 00:00 Sat",
                "2024-01-19 00:00 Fri"
            ]
        );
        assert_eq!(
            nexts("*/1 * * * *", "2024-01-01T00:00:30Z", &z, 2),
            ["2024-01-01 00:01 Mon", "2024-01-01 00:02 Mon"]
        );
        assert_eq!(
            nexts("*/15 * * * *", "2024-01-01T00:07:00Z", &z, 3),
            [
                "2024-01-01 00:15 Mon",
                "2024-01-01 00:30 Mon",
                "2024-01-01 00:45 Mon"
            ]
        );
    }

    #[test]
    fn fields_ranges_lists_steps_and_names() {
        let z = utc();
        let from = "2024-01-01T00:00:00Z";
        assert_eq!(
            nexts("30 9-17/4 * * mon-fri", from, &z, 4),
            [
                "2024-01-01 09:30 Mon",
                "2024-01-01 13:30 Mon",
                "2024-01-01 17:30 Mon",
                "2024-01-02 09:30 Tue"
            ]
        );
        assert_eq!(
            nexts("0 0 1 JAN,jul ?", from, &z, 2),
            ["2024-07-01 00:00 Mon", "2025-01-01 00:00 Wed"]
        );
        // "N/step" is "N-max/step".
        assert_eq!(
            nexts("50/5 * * * *", from, &z, 3),
            [
                "2024-01-01 00:50 Mon",
                "2024-01-01 00:55 Mon",
                "2024-01-01 01:50 Mon"
            ]
        );
        // Day of month AND day of week when either is *, else OR.
        assert_eq!(nexts("0 0 * * sun", from, &z, 1), ["2024-01-07 00:00 Sun"]);
        assert_eq!(nexts("0 0 1 * *", from, &z, 1), ["2024-02-01 00:00 Thu"]);
        assert_eq!(
            nexts("0 0 1 * sun", from, &z, 2),
            ["2024-01-07 00:00 Sun", "2024-01-14 00:00 Sun"]
        );
        // A step over * clears the star: OR again.
        assert_eq!(
            nexts("0 0 */10 * 2", from, &z, 3),
            [
                "2024-01-02 00:00 Tue",
                "2024-01-09 00:00 Tue",
                "2024-01-11 00:00 Thu"
            ]
        );
        // 7 is Sunday.
        assert_eq!(nexts("0 0 * * 7", from, &z, 1), ["2024-01-07 00:00 Sun"]);
        // Leap day.
        assert_eq!(
            nexts("0 12 29 2 *", from, &z, 2),
            ["2024-02-29 12:00 Thu", "2028-02-29 12:00 Tue"]
        );
        // Never (Feb 30): no time within five years.
        let (s, _) = parse("0 0 30 2 *").unwrap();
        assert_eq!(s.next(t(from), &z), None);
        // @every.
        let (s, _) = parse("@every 1h30m").unwrap();
        assert_eq!(s, Schedule::Every(5400));
        assert_eq!(
            s.next(t("2024-01-01T00:00:00.5Z"), &z),
            Some(t("2024-01-01T01:30:00Z"))
        );
        assert_eq!(parse("@every 100ms").unwrap().0, Schedule::Every(1));
        // TZ prefixes.
        assert_eq!(
            parse("CRON_TZ=Europe/Paris 0 * * * *")
                .unwrap()
                .1
                .as_deref(),
            Some("Europe/Paris")
        );
    }

    #[test]
    fn parse_errors_read_like_robfig_cron() {
        for (spec, err) in [
            ("* * *", "expected exactly 5 fields, found 3: [* * *]"),
            ("61 * * * *", "end of range (61) above maximum (59): 61"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            (
                "x * * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("1/2/3 * * * *", "too many slashes: 1/2/3"),
            ("@often", "unrecognized descriptor: @often"),
            (
                "@every 5",
                "failed to parse duration 5: time: missing unit in duration \"5\"",
            ),
            (
                "@every 5y",
                "failed to parse duration 5y: time: unknown unit \"y\" in duration \"5y\"",
            ),
            ("", "empty spec string"),
        ] {
            assert_eq!(parse(spec).unwrap_err(), err, "{spec}");
        }
    }

    #[test]
    fn daylight_saving_time_in_the_schedules_time_zone() {
        let Ok(ny) = load_time_zone("America/New_York") else {
            // The tz database comes from the system (/usr/share/zoneinfo).
            eprintln!("skipped: no tz database entry for America/New_York on this system");
            return;
        };
        // Spring forward (2024-03-10, 02:00 -> 03:00): 02:30 does not
        // exist that day and is skipped, as robfig/cron does.
        assert_eq!(
            nexts("30 2 * * *", "2024-03-09T12:00:00Z", &ny, 2),
            ["2024-03-11 02:30 Mon", "2024-03-12 02:30 Tue"]
        );
        // Hourly at :30 goes from 01:30 EST to 03:30 EDT, one real hour.
        let (s, _) = parse("30 * * * *").unwrap();
        let a = s.next(t("2024-03-10T06:00:00Z"), &ny).unwrap(); // 01:30 EST
        let b = s.next(a, &ny).unwrap(); // 03:30 EDT
        assert_eq!(
            (a, b),
            (t("2024-03-10T06:30:00Z"), t("2024-03-10T07:30:00Z"))
        );
        // Fall back (2024-11-03, 02:00 -> 01:00): 01:30 happens twice and
        // runs twice.
        let (s, _) = parse("30 1 * * *").unwrap();
        let a = s.next(t("2024-11-03T04:00:00Z"), &ny).unwrap();
        let b = s.next(a, &ny).unwrap();
        assert_eq!(
            (a, b),
            (t("2024-11-03T05:30:00Z"), t("2024-11-03T06:30:00Z"))
        );
        // Daily at midnight keeps to local midnight across the change.
        assert_eq!(
            nexts("0 0 * * *", "2024-11-02T12:00:00Z", &ny, 2),
            ["2024-11-03 00:00 Sun", "2024-11-04 00:00 Mon"]
        );
        let (s, _) = parse("0 0 * * *").unwrap();
        assert_eq!(
            s.next(t("2024-11-03T12:00:00Z"), &ny),
            Some(t("2024-11-04T05:00:00Z"))
        );
        // Same schedule in UTC vs Asia/Tokyo: 9 hours apart.
        let tokyo = load_time_zone("Asia/Tokyo").unwrap();
        let (s, _) = parse("0 9 * * *").unwrap();
        assert_eq!(
            s.next(t("2024-01-01T00:00:00Z"), &tokyo),
            Some(t("2024-01-02T00:00:00Z"))
        );
        assert!(load_time_zone("Mars/Olympus").is_err());
    }

    fn cj(schedule: &str, created: &str) -> CronJob {
        CronJob::from_json(
            json!({"metadata": {"name": "hello", "namespace": "default", "uid": "c1",
                "creationTimestamp": created},
                "spec": {"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": false,
                    "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                    "jobTemplate": {"metadata": {"labels": {"a": "b"}}, "spec": {"template": {"spec": {}}}}}}),
            1,
        )
    }

    /// Runs the decisions on a clock ticking from `from` by `step`
    /// seconds, starting Jobs as the controller would; returns the names
    /// of the Jobs started and when.
    fn simulate(cj: &mut CronJob, from: &str, step: i64, ticks: usize) -> Vec<(String, String)> {
        let mut started = Vec::new();
        let mut now = t(from);
        for _ in 0..ticks {
            if let (Decision::Start { scheduled, .. }, _) = decide(cj, now, &utc()) {
                let name = job_name(&cj.name, scheduled);
                started.push((name.clone(), time_str(now)));
                cj.active
                    .push(json!({"name": name, "namespace": "default", "uid": name}));
                cj.last_schedule = Some(scheduled);
            }
            now += SignedDuration::from_secs(step);
        }
        started
    }

    #[test]
    fn starts_once_per_schedule_time_on_an_injected_clock() {
        let mut c = cj("*/1 * * * *", "2024-01-01T00:00:10Z");
        // Before the first minute: nothing; wakes 50.1 s later.
        let (d, _) = decide(&c, t("2024-01-01T00:00:10Z"), &utc());
        assert_eq!(d, Decision::Wait(Some(Duration::from_millis(50_100))));
        // Every 20 s for 3 minutes: one Job per minute, named by minute.
        let started = simulate(&mut c, "2024-01-01T00:00:10Z", 20, 10);
        let m = t("2024-01-01T00:01:00Z").as_second() / 60;
        assert_eq!(
            started,
            [
                (format!("hello-{m}"), "2024-01-01T00:01:10Z".to_string()),
                (format!("hello-{}", m + 1), "2024-01-01T00:02:10Z".into()),
                (format!("hello-{}", m + 2), "2024-01-01T00:03:10Z".into()),
            ]
        );
        // After a start, the next sync is at the next minute.
        let (d, _) = decide(&c, t("2024-01-01T00:03:30Z"), &utc());
        assert_eq!(d, Decision::Wait(Some(Duration::from_millis(30_100))));
    }

    #[test]
    fn missed_schedules_deadlines_and_concurrency() {
        // Down for an hour: only the most recent time starts.
        let mut c = cj("*/5 * * * *", "2024-01-01T00:00:00Z");
        c.last_schedule = Some(t("2024-01-01T00:00:00Z"));
        let (d, ev) = decide(&c, t("2024-01-01T01:02:00Z"), &utc());
        assert_eq!(
            d,
            Decision::Start {
                scheduled: t("2024-01-01T01:00:00Z"),
                replace: false
            }
        );
        assert!(ev.is_empty());
        // With a 60 s starting deadline, two minutes late is too late: not
        // even considered (the window starts 60 s ago), so no event either.
        c.starting_deadline = Some(60);
        let (d, ev) = decide(&c, t("2024-01-01T01:02:00Z"), &utc());
        assert_eq!(d, Decision::Wait(Some(Duration::from_millis(180_100))));
        assert!(ev.is_empty());
        // ...one minute late is in time.
        c.starting_deadline = Some(200);
        let (d, _) = decide(&c, t("2024-01-01T01:02:00Z"), &utc());
        assert!(matches!(d, Decision::Start { .. }));
        // More than 100 missed: started anyway, with a warning.
        let mut c = cj("* * * * *", "2024-01-01T00:00:00Z");
        let (d, ev) = decide(&c, t("2024-01-01T05:00:30Z"), &utc());
        assert_eq!(
            d,
            Decision::Start {
                scheduled: t("2024-01-01T05:00:00Z"),
                replace: false
            }
        );
        assert_eq!(ev[0].1, "TooManyMissedTimes");
        // The same time is not started twice.
        c.last_schedule = Some(t("2024-01-01T05:00:00Z"));
        assert!(matches!(
            decide(&c, t("2024-01-01T05:00:40Z"), &utc()).0,
            Decision::Wait(_)
        ));
        // Forbid with an active Job: JobAlreadyActive; Replace: replace.
        c.active
            .push(json!({"name": "hello-1", "namespace": "default", "uid": "x"}));
        c.concurrency = "Forbid".into();
        let (d, ev) = decide(&c, t("2024-01-01T05:01:10Z"), &utc());
        assert!(matches!(d, Decision::Wait(Some(_))));
        assert_eq!(ev[0].1, "JobAlreadyActive");
        c.concurrency = "Replace".into();
        let (d, _) = decide(&c, t("2024-01-01T05:01:10Z"), &utc());
        assert_eq!(
            d,
            Decision::Start {
                scheduled: t("2024-01-01T05:01:00Z"),
                replace: true
            }
        );
        // Suspended or deleting: nothing, no wake-up.
        c.suspend = true;
        assert_eq!(
            decide(&c, t("2024-01-01T05:02:10Z"), &utc()).0,
            Decision::Wait(None)
        );
        // Bad time zone or schedule: an event, no wake-up.
        let mut c = cj("* * * * *", "2024-01-01T00:00:00Z");
        c.time_zone = Some("Mars/Olympus".into());
        let (d, ev) = decide(&c, t("2024-01-01T00:05:00Z"), &utc());
        assert_eq!((d, ev[0].1), (Decision::Wait(None), "UnknownTimeZone"));
        let c = cj("0 0 30 2 *", "2024-01-01T00:00:00Z");
        let (d, ev) = decide(&c, t("2024-01-01T00:05:00Z"), &utc());
        assert_eq!((d, ev[0].1), (Decision::Wait(None), "InvalidSchedule"));
        let c = cj("@often", "2024-01-01T00:00:00Z");
        assert_eq!(
            decide(&c, t("2024-01-01T00:05:00Z"), &utc()).1[0].1,
            "UnparseableSchedule"
        );
    }

    #[test]
    fn time_zones_and_the_scheduled_timestamp_annotation() {
        let Ok(_) = load_time_zone("Europe/Paris") else {
            eprintln!("skipped: no tz database entry for Europe/Paris on this system");
            return;
        };
        let mut c = cj("0 9 * * *", "2024-01-01T00:00:00Z");
        c.time_zone = Some("Europe/Paris".into());
        let (d, _) = decide(&c, t("2024-01-01T08:30:00Z"), &utc());
        assert_eq!(
            d,
            Decision::Start {
                scheduled: t("2024-01-01T08:00:00Z"),
                replace: false
            }
        );
        let job = job_from_template(&c, t("2024-01-01T08:00:00Z"));
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2024-01-01T09:00:00+01:00"
        );
        assert_eq!(
            job["metadata"]["name"],
            format!("hello-{}", t("2024-01-01T08:00:00Z").as_second() / 60)
        );
        assert_eq!(job["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        c.time_zone = None;
        let job = job_from_template(&c, t("2024-01-01T08:00:00Z"));
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2024-01-01T08:00:00Z"
        );
    }

    #[test]
    fn history_limits_delete_the_oldest_finished_jobs() {
        let mut c = cj("* * * * *", "2024-01-01T00:00:00Z");
        c.successful_limit = Some(1);
        c.failed_limit = Some(0);
        let job = |name: &str, fin: Option<&'static str>, start: Option<&str>| ChildJob {
            name: name.into(),
            uid: name.into(),
            finished: fin,
            start: start.map(t),
            completion: None,
            controller: None,
        };
        let jobs = [
            job("b", Some("Complete"), Some("2024-01-01T00:02:00Z")),
            job("a", Some("Complete"), Some("2024-01-01T00:01:00Z")),
            job("c", Some("Complete"), None),
            job("d", Some("Failed"), Some("2024-01-01T00:03:00Z")),
            job("e", None, Some("2024-01-01T00:00:00Z")),
        ];
        let names: Vec<String> = history_to_delete(&c, &jobs)
            .into_iter()
            .map(|j| j.name)
            .collect();
        assert_eq!(names, ["a", "b", "d"]);
        c.successful_limit = None;
        c.failed_limit = None;
        assert!(history_to_delete(&c, &jobs).is_empty());
    }
}
