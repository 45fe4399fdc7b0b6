//! Progress of long runs, reported to whoever wants to show it: the CLI draws a bar on
//! a terminal; the library only counts.

/// Called with the number of items just finished and the total (from any thread).
pub(crate) type Progress<'a> = Option<&'a (dyn Fn(u64, u64) + Sync)>;

pub(crate) fn tick(progress: Progress, done: u64, total: u64) {
    if let Some(f) = progress {
        f(done, total);
    }
}

/// Progress of an apply's service steps, per service (a bar each on a terminal).
pub(crate) trait ServiceSteps: Sync {
    /// Before any step: how many steps each service is planned to take.
    fn planned(&self, totals: &[(String, u64)]);
    /// One step of `service` done (failed or not; a retry is a step of its own).
    fn done(&self, service: &str);
    /// A phase of the apply after the services starts (`writing key files`, counting
    /// `total` of them; `writing the commit`, of unknown size).
    fn phase(&self, _name: &'static str, _total: Option<u64>) {}
    /// One more item of the current phase.
    fn tick(&self) {}
}
