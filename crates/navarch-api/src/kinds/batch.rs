//! Jobs and CronJobs.

use super::pod::{default_template, validate_template};
use super::util::{
    arr, container_cells, existing_obj_mut, flag, format_label_selector, has, int, obj_mut, q, s,
    set_default, set_default_str,
};
use super::validation::{
    immutable, invalid_all, selector_matches_template, validate_enum, validate_label_selector,
    validate_nonnegative, validate_object_meta, NameRule,
};
use super::{Column, AGE_COLUMN, NAME_COLUMN};
use crate::error::Cause;
use jiff::Timestamp;
use serde_json::{json, Value};

const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";
const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";

// --------------------------------------------------------------------- Job

/// `SetDefaults_Job` plus the template's pod defaults.
pub fn job_defaults(job: &mut Value) {
    let template_labels = job["spec"]["template"]["metadata"]["labels"].clone();
    if let Some(spec) = existing_obj_mut(job, "spec").and_then(Value::as_object_mut) {
        if !has_key(spec, "completions") && !has_key(spec, "parallelism") {
            spec.insert("completions".into(), json!(1));
            spec.insert("parallelism".into(), json!(1));
        }
        set_default(spec, "parallelism", json!(1));
        let backoff = if has_key(spec, "backoffLimitPerIndex") {
            json!(i32::MAX)
        } else {
            json!(6)
        };
        set_default(spec, "backoffLimit", backoff);
        set_default_str(spec, "completionMode", "NonIndexed");
        set_default(spec, "suspend", json!(false));
        let replacement = if has_key(spec, "podFailurePolicy") {
            "Failed"
        } else {
            "TerminatingOrFailed"
        };
        set_default_str(spec, "podReplacementPolicy", replacement);
        if let Some(rules) = spec
            .get_mut("podFailurePolicy")
            .and_then(|p| p.get_mut("rules"))
            .and_then(Value::as_array_mut)
        {
            for rule in rules {
                if let Some(conds) = rule
                    .get_mut("onPodConditions")
                    .and_then(Value::as_array_mut)
                {
                    for c in conds.iter_mut().filter_map(Value::as_object_mut) {
                        set_default_str(c, "status", "True");
                    }
                }
            }
        }
    }
    if template_labels.as_object().is_some_and(|m| !m.is_empty())
        && job["metadata"]["labels"]
            .as_object()
            .is_none_or(|m| m.is_empty())
    {
        if let Some(meta) = obj_mut(job, "metadata") {
            meta.insert("labels".into(), template_labels);
        }
    }
    if let Some(t) = existing_obj_mut(job, "spec").and_then(|s| existing_obj_mut(s, "template")) {
        default_template(t);
    }
}

fn has_key(m: &serde_json::Map<String, Value>, k: &str) -> bool {
    m.get(k).is_some_and(|v| !v.is_null())
}

/// `PrepareForCreate`: status cleared and, unless `manualSelector`, the
/// selector generated from the job's uid.
pub fn job_prepare(job: &mut Value) {
    if let Some(m) = job.as_object_mut() {
        m.insert("status".into(), json!({}));
    }
    if flag(&job["spec"], "manualSelector") {
        return;
    }
    let name = crate::meta::name(job).to_string();
    let uid = crate::meta::uid(job).to_string();
    let Some(spec) = existing_obj_mut(job, "spec") else {
        return;
    };
    if let Some(labels) = obj_mut(spec, "template").and_then(|t| {
        let t = t.entry("metadata").or_insert(Value::Null);
        if t.is_null() {
            *t = json!({});
        }
        t.as_object_mut()
    }) {
        let labels = labels.entry("labels").or_insert(Value::Null);
        if labels.is_null() {
            *labels = json!({});
        }
        if let Some(labels) = labels.as_object_mut() {
            for k in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
                labels.entry(k).or_insert(json!(name));
            }
            for k in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
                labels.entry(k).or_insert(json!(uid));
            }
        }
    }
    if let Some(ml) = obj_mut(spec, "selector").and_then(|sel| {
        let ml = sel.entry("matchLabels").or_insert(Value::Null);
        if ml.is_null() {
            *ml = json!({});
        }
        ml.as_object_mut()
    }) {
        ml.entry(CONTROLLER_UID_LABEL).or_insert(json!(uid));
    }
}

/// Validation of a job spec at `path` (`spec` or `spec.jobTemplate.spec`);
/// `selector_required` is false for a CronJob's template.
fn validate_job_spec(spec: &Value, path: &str, selector_required: bool) -> Vec<Cause> {
    let mut out = Vec::new();
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        out.extend(validate_nonnegative(&spec[f], &format!("{path}.{f}")));
    }
    if let Some(n) = int(spec, "activeDeadlineSeconds").filter(|n| *n == 0) {
        out.push(Cause::invalid(
            format!("{path}.activeDeadlineSeconds"),
            n,
            "must be greater than 0",
        ));
    }
    let sel = &spec["selector"];
    if sel.is_null() {
        if selector_required {
            out.push(Cause::required(format!("{path}.selector")));
        }
    } else {
        out.extend(validate_label_selector(sel, &format!("{path}.selector")));
        out.extend(selector_matches_template(
            sel,
            &spec["template"]["metadata"]["labels"],
            &format!("{path}.template.metadata.labels"),
        ));
    }
    out.extend(validate_enum(
        &spec["completionMode"],
        &format!("{path}.completionMode"),
        &["NonIndexed", "Indexed"],
        false,
    ));
    if s(spec, "completionMode") == "Indexed" && !has(spec, "completions") {
        out.push(super::validation::required_because(
            &format!("{path}.completions"),
            "when completion mode is Indexed",
        ));
    }
    out.extend(validate_enum(
        &spec["podReplacementPolicy"],
        &format!("{path}.podReplacementPolicy"),
        &["TerminatingOrFailed", "Failed"],
        false,
    ));
    out.extend(validate_template(
        &spec["template"],
        &format!("{path}.template"),
    ));
    let rp = s(&spec["template"]["spec"], "restartPolicy");
    if rp != "OnFailure" && rp != "Never" {
        out.push(Cause::not_supported(
            format!("{path}.template.spec.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
    out
}

pub fn job_validate(job: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(job, old, NameRule::Subdomain);
    let spec = &job["spec"];
    out.extend(validate_job_spec(spec, "spec", true));
    let status = &job["status"];
    if status.is_object() {
        for f in ["active", "succeeded", "failed", "ready", "terminating"] {
            out.extend(validate_nonnegative(&status[f], &format!("status.{f}")));
        }
    }
    if let Some(old) = old {
        let os = &old["spec"];
        out.extend(immutable(
            &spec["selector"],
            &os["selector"],
            "spec.selector",
        ));
        out.extend(immutable(
            &spec["completionMode"],
            &os["completionMode"],
            "spec.completionMode",
        ));
        out.extend(immutable(
            &spec["podFailurePolicy"],
            &os["podFailurePolicy"],
            "spec.podFailurePolicy",
        ));
        out.extend(immutable(
            &spec["backoffLimitPerIndex"],
            &os["backoffLimitPerIndex"],
            "spec.backoffLimitPerIndex",
        ));
        // Elastic indexed jobs may change completions together with parallelism.
        let elastic =
            s(spec, "completionMode") == "Indexed" && spec["completions"] == spec["parallelism"];
        if !elastic {
            out.extend(immutable(
                &spec["completions"],
                &os["completions"],
                "spec.completions",
            ));
        }
        // A suspended job that never started may change its scheduling directives.
        let never_started = old["status"]["startTime"].is_null();
        let mutable_sched = flag(os, "suspend") && never_started;
        let strip = |t: &Value| {
            let mut t = t.clone();
            if mutable_sched {
                if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("labels");
                    m.remove("annotations");
                }
                if let Some(m) = t.get_mut("spec").and_then(Value::as_object_mut) {
                    for f in ["nodeSelector", "affinity", "tolerations", "schedulingGates"] {
                        m.remove(f);
                    }
                }
            }
            t
        };
        if strip(&spec["template"]) != strip(&os["template"]) {
            out.push(Cause::immutable("spec.template"));
        }
    }
    out
}

pub const JOB_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Status",
        kind: "string",
        format: "",
        description: "Status of the job.",
        priority: 0,
    },
    Column {
        name: "Completions",
        kind: "string",
        format: "",
        description: "The number of pods which reached phase Succeeded.",
        priority: 0,
    },
    Column {
        name: "Duration",
        kind: "string",
        format: "",
        description: "Time required to complete the job.",
        priority: 0,
    },
    AGE_COLUMN,
    Column {
        name: "Containers",
        kind: "string",
        format: "",
        description: "Names of each container in the template.",
        priority: 1,
    },
    Column {
        name: "Images",
        kind: "string",
        format: "",
        description: "Images referenced by each container in the template.",
        priority: 1,
    },
    Column {
        name: "Selector",
        kind: "string",
        format: "",
        description: "A label query over pods that should match the pod count.",
        priority: 1,
    },
];

fn job_condition(status: &Value, ty: &str) -> bool {
    arr(status, "conditions")
        .iter()
        .find(|c| s(c, "type") == ty)
        .is_some_and(|c| s(c, "status") == "True")
}

fn ts(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|t| t.parse().ok())
}

pub fn job_row(job: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &job["spec"];
    let status = &job["status"];
    let succeeded = int(status, "succeeded").unwrap_or(0);
    let completions = match int(spec, "completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(spec, "parallelism").unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (ts(&status["startTime"]), ts(&status["completionTime"])) {
        (None, _) => String::new(),
        (Some(start), None) => crate::meta::human_duration(now.as_second() - start.as_second()),
        (Some(start), Some(end)) => {
            crate::meta::human_duration(end.as_second() - start.as_second())
        }
    };
    let state = if job_condition(status, "Complete") {
        "Complete"
    } else if job_condition(status, "Failed") {
        "Failed"
    } else if !job["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if job_condition(status, "Suspended") {
        "Suspended"
    } else if job_condition(status, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(&spec["template"]["spec"]);
    vec![
        json!(crate::meta::name(job)),
        json!(state),
        json!(completions),
        json!(duration),
        json!(crate::meta::age(job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(&spec["selector"])),
    ]
}

pub const JOB_FIELDS: &[&str] = &["status.successful"];

pub fn job_field(job: &Value, label: &str) -> Option<String> {
    match label {
        "status.successful" => Some(int(&job["status"], "succeeded").unwrap_or(0).to_string()),
        _ => None,
    }
}

// ----------------------------------------------------------------- CronJob

pub fn cron_job_defaults(cj: &mut Value) {
    if let Some(spec) = existing_obj_mut(cj, "spec").and_then(Value::as_object_mut) {
        set_default_str(spec, "concurrencyPolicy", "Allow");
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
    }
    if let Some(t) = existing_obj_mut(cj, "spec")
        .and_then(|s| existing_obj_mut(s, "jobTemplate"))
        .and_then(|j| existing_obj_mut(j, "spec"))
        .and_then(|j| existing_obj_mut(j, "template"))
    {
        default_template(t);
    }
}

pub fn cron_job_prepare(cj: &mut Value) {
    if let Some(m) = cj.as_object_mut() {
        m.insert("status".into(), json!({}));
    }
}

/// The bounds of the five standard cron fields.
const CRON_FIELDS: [(u32, u32, &[&str]); 5] = [
    (0, 59, &[]),
    (0, 23, &[]),
    (1, 31, &[]),
    (
        1,
        12,
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    ),
    (0, 6, &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
];

fn parse_cron_value(v: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
        return Ok(i as u32 + lo);
    }
    let n: u32 = v.parse().map_err(|_| {
        format!(
            "failed to parse int from {v}: strconv.Atoi: parsing {}: invalid syntax",
            q(v)
        )
    })?;
    // Day of week 7 is Sunday.
    let hi = if hi == 6 { 7 } else { hi };
    if n < lo || n > hi {
        return Err(if n < lo {
            format!("beginning of range ({n}) below minimum ({lo}): {v}")
        } else {
            format!("end of range ({n}) above maximum ({hi}): {v}")
        });
    }
    Ok(n)
}

fn parse_cron_field(f: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(), String> {
    for part in f.split(',') {
        let range = match part.split_once('/') {
            Some((r, st)) => {
                let n: u32 = st.parse().map_err(|_| {
                    format!(
                        "failed to parse int from {st}: strconv.Atoi: parsing {}: invalid syntax",
                        q(st)
                    )
                })?;
                if n == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                r
            }
            None => part,
        };
        if range == "*" || range == "?" {
            continue;
        }
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    parse_cron_value(a, lo, hi, names)?,
                    parse_cron_value(b, lo, hi, names)?,
                );
                if a > b {
                    return Err(format!(
                        "beginning of range ({a}) beyond end of range ({b}): {part}"
                    ));
                }
            }
            None => {
                parse_cron_value(range, lo, hi, names)?;
            }
        }
    }
    Ok(())
}

/// Roughly `cron.ParseStandard`: five fields or a `@`-descriptor.
pub fn validate_schedule(schedule: &str) -> Result<(), String> {
    let sched = schedule.trim();
    if sched.starts_with('@') {
        return match sched {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            _ if sched.starts_with("@every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {sched}")),
        };
    }
    let fields: Vec<&str> = sched.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    for (f, (lo, hi, names)) in fields.iter().zip(CRON_FIELDS) {
        parse_cron_field(f, lo, hi, names)?;
    }
    Ok(())
}

pub fn cron_job_validate(cj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(cj, old, NameRule::Subdomain);
    let name = crate::meta::name(cj);
    if name.len() > 52 {
        out.push(Cause::invalid(
            "metadata.name",
            q(name),
            "must be no more than 52 characters",
        ));
    }
    let spec = &cj["spec"];
    let schedule = s(spec, "schedule");
    if schedule.is_empty() {
        out.push(Cause::required("spec.schedule"));
    } else if schedule.contains("TZ") {
        out.push(Cause::invalid(
            "spec.schedule",
            q(schedule),
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    } else if let Err(e) = validate_schedule(schedule) {
        out.push(Cause::invalid("spec.schedule", q(schedule), e));
    }
    let tz = s(spec, "timeZone");
    if has(spec, "timeZone") && (tz.is_empty() || tz.contains(' ') || tz.starts_with('/')) {
        out.extend(invalid_all(
            "spec.timeZone",
            tz,
            vec!["unknown time zone ".to_string() + tz],
        ));
    }
    out.extend(validate_enum(
        &spec["concurrencyPolicy"],
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        true,
    ));
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        out.extend(validate_nonnegative(&spec[f], &format!("spec.{f}")));
    }
    let jt = &spec["jobTemplate"];
    out.extend(super::validation::validate_labels(
        &jt["metadata"]["labels"],
        "spec.jobTemplate.metadata.labels",
    ));
    out.extend(super::validation::validate_annotations(
        &jt["metadata"]["annotations"],
        "spec.jobTemplate.metadata.annotations",
    ));
    out.extend(validate_job_spec(
        &jt["spec"],
        "spec.jobTemplate.spec",
        false,
    ));
    out
}

pub const CRON_JOB_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Schedule", kind: "string", format: "", description: "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.", priority: 0 },
    Column { name: "Timezone", kind: "string", format: "", description: "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.", priority: 0 },
    Column { name: "Suspend", kind: "boolean", format: "", description: "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.", priority: 0 },
    Column { name: "Active", kind: "integer", format: "", description: "A list of pointers to currently running jobs.", priority: 0 },
    Column { name: "Last Schedule", kind: "string", format: "", description: "Information when was the last time the job was successfully scheduled.", priority: 0 },
    AGE_COLUMN,
    Column { name: "Containers", kind: "string", format: "", description: "Names of each container in the template.", priority: 1 },
    Column { name: "Images", kind: "string", format: "", description: "Images referenced by each container in the template.", priority: 1 },
    Column { name: "Selector", kind: "string", format: "", description: "A label query over pods that should match the pod count.", priority: 1 },
];

pub fn cron_job_row(cj: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &cj["spec"];
    let status = &cj["status"];
    let last = if status["lastScheduleTime"].is_null() {
        "<none>".to_string()
    } else {
        crate::meta::since(&status["lastScheduleTime"], now)
    };
    let tz = match spec["timeZone"].as_str() {
        Some(t) => t.to_string(),
        None => "<none>".to_string(),
    };
    let suspend = match spec["suspend"].as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = &spec["jobTemplate"]["spec"];
    let (names, images) = container_cells(&job_spec["template"]["spec"]);
    vec![
        json!(crate::meta::name(cj)),
        json!(s(spec, "schedule")),
        json!(tz),
        json!(suspend),
        json!(arr(status, "active").len()),
        json!(last),
        json!(crate::meta::age(cj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(&job_spec["selector"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-01-01T01:00:00Z".parse().unwrap()
    }

    fn job() -> Value {
        json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}})
    }

    fn fields(c: &[Cause]) -> Vec<&str> {
        c.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn job_defaults_and_selector() {
        let mut j = job();
        job_prepare(&mut j);
        job_defaults(&mut j);
        let spec = &j["spec"];
        assert_eq!(
            (
                spec["completions"].clone(),
                spec["parallelism"].clone(),
                spec["backoffLimit"].clone()
            ),
            (json!(1), json!(1), json!(6))
        );
        assert_eq!(
            (spec["completionMode"].clone(), spec["suspend"].clone()),
            (json!("NonIndexed"), json!(false))
        );
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"],
            json!({"job-name": "pi", "batch.kubernetes.io/job-name": "pi", "controller-uid": "u-1", "batch.kubernetes.io/controller-uid": "u-1"})
        );
        assert_eq!(
            j["metadata"]["labels"],
            spec["template"]["metadata"]["labels"]
        );
        assert_eq!(j["status"], json!({}));
        assert!(
            job_validate(&j, None).is_empty(),
            "{:?}",
            job_validate(&j, None)
        );
        let mut only_par = job();
        only_par["spec"]["parallelism"] = json!(3);
        job_defaults(&mut only_par);
        assert!(only_par["spec"]["completions"].is_null());
    }

    #[test]
    fn job_validation() {
        let mut j = job();
        j["spec"]["template"]["spec"]["restartPolicy"] = Value::Null;
        job_prepare(&mut j);
        job_defaults(&mut j);
        let c = job_validate(&j, None);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].render(), "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"");
        let mut m = job();
        m["spec"]["manualSelector"] = json!(true);
        job_prepare(&mut m);
        job_defaults(&mut m);
        assert_eq!(fields(&job_validate(&m, None)), vec!["spec.selector"]);
        let mut ok = job();
        job_prepare(&mut ok);
        job_defaults(&mut ok);
        let mut changed = ok.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        assert_eq!(
            fields(&job_validate(&changed, Some(&ok))),
            vec!["spec.template"]
        );
        let mut par = ok.clone();
        par["spec"]["parallelism"] = json!(5);
        assert!(job_validate(&par, Some(&ok)).is_empty());
    }

    #[test]
    fn job_rows() {
        let j = json!({"metadata": {"name": "pi", "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"completions": 2, "template": {"spec": {"containers": [{"name": "c", "image": "perl"}]}}},
            "status": {"succeeded": 2, "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:30Z", "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(
            job_row(&j, now())[..5],
            [
                json!("pi"),
                json!("Complete"),
                json!("2/2"),
                json!("30s"),
                json!("60m")
            ]
        );
        let running = json!({"metadata": {"name": "r"}, "spec": {"parallelism": 3}, "status": {"startTime": "2024-01-01T00:59:00Z"}});
        assert_eq!(
            job_row(&running, now())[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("60s")]
        );
        assert_eq!(job_field(&j, "status.successful").as_deref(), Some("2"));
    }

    #[test]
    fn cron_jobs() {
        let mut cj = json!({"metadata": {"name": "hello"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        cron_job_defaults(&mut cj);
        let spec = &cj["spec"];
        assert_eq!(
            (
                spec["concurrencyPolicy"].clone(),
                spec["suspend"].clone(),
                spec["successfulJobsHistoryLimit"].clone(),
                spec["failedJobsHistoryLimit"].clone()
            ),
            (json!("Allow"), json!(false), json!(3), json!(1))
        );
        assert_eq!(
            spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        assert!(spec["jobTemplate"]["spec"]["backoffLimit"].is_null());
        assert!(
            cron_job_validate(&cj, None).is_empty(),
            "{:?}",
            cron_job_validate(&cj, None)
        );
        for (sched, ok) in [
            ("@hourly", true),
            ("0 0 1 1 *", true),
            ("0 0 * * mon-fri", true),
            ("* * *", false),
            ("61 * * * *", false),
            ("@often", false),
        ] {
            assert_eq!(validate_schedule(sched).is_ok(), ok, "{sched}");
        }
        let mut bad = cj.clone();
        bad["spec"]["schedule"] = json!("* * *");
        assert_eq!(
            cron_job_validate(&bad, None)[0].render(),
            "spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]"
        );
        bad["spec"]["schedule"] = json!("");
        assert_eq!(
            fields(&cron_job_validate(&bad, None)),
            vec!["spec.schedule"]
        );
        let row = cron_job_row(&cj, now());
        assert_eq!(
            row[1..6],
            [
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(0),
                json!("<none>")
            ]
        );
    }
}
