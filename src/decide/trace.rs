//! What the pipeline did, step by step, for `explain`.
//!
//! Owns: the `Trace` sink the pipeline reports each step to, its no-op (the check
//! path: every call inlines to nothing and the detail closures never run) and the
//! recorder the admin API's `Explain` uses. The pipeline reports; it never reads the
//! trace back, so explaining a request cannot change how it is decided.

/// A step of the pipeline, in the order `evaluate` takes them (see `crate::decide`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The front door's size limits, and the view's staleness (`--max-staleness-secs`).
    Limits,
    /// The stage the grants are looked up in, and who named it.
    Stage,
    /// The canonical host and path that routing and grants use.
    Target,
    /// Which API the request is for (route hint or route table).
    Route,
    /// Which signature scheme the credential is in.
    Scheme,
    /// The key (or app) the credential names.
    Credential,
    /// The signature, over the server's string-to-sign.
    Signature,
    App,
    Key,
    Freshness,
    Nonce,
    Body,
    /// Whether the matched API takes this request (exists, body rules, scheme).
    Api,
    Grant,
    /// The user token, on an API that requires one.
    User,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Limits => "limits",
            Step::Stage => "stage",
            Step::Target => "target",
            Step::Route => "route",
            Step::Scheme => "scheme",
            Step::Credential => "credential",
            Step::Signature => "signature",
            Step::App => "app",
            Step::Key => "key",
            Step::Freshness => "freshness",
            Step::Nonce => "nonce",
            Step::Body => "body",
            Step::Api => "api",
            Step::Grant => "grant",
            Step::User => "user",
        }
    }
}

/// How a step came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The step denied the request: the last step of a deny.
    Fail,
    /// The step did not apply to this request (e.g. no nonce to claim).
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

/// Where the pipeline reports its steps. `detail` is only called by a sink that keeps
/// it, so building the text costs nothing on the check path.
pub trait Trace {
    fn step(&mut self, step: Step, outcome: Outcome, detail: impl FnOnce() -> String);

    /// A step that passed or failed with the deny's own reason.
    fn result<T>(
        &mut self,
        step: Step,
        r: &Result<T, crate::deny::Deny>,
        passed: impl FnOnce(&T) -> String,
    ) {
        match r {
            Ok(v) => self.step(step, Outcome::Pass, || passed(v)),
            Err(d) => self.step(step, Outcome::Fail, || {
                format!("{}: {}", d.code.as_str(), d.message)
            }),
        }
    }
}

/// The check path's sink: keeps nothing.
pub struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn step(&mut self, _: Step, _: Outcome, _: impl FnOnce() -> String) {}

    #[inline(always)]
    fn result<T>(
        &mut self,
        _: Step,
        _: &Result<T, crate::deny::Deny>,
        _: impl FnOnce(&T) -> String,
    ) {
    }
}

/// One recorded step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub step: Step,
    pub outcome: Outcome,
    pub detail: String,
}

/// Keeps every step, in order.
#[derive(Debug, Default)]
pub struct Recorder {
    pub steps: Vec<Recorded>,
}

impl Trace for Recorder {
    fn step(&mut self, step: Step, outcome: Outcome, detail: impl FnOnce() -> String) {
        self.steps.push(Recorded {
            step,
            outcome,
            detail: detail(),
        });
    }
}
