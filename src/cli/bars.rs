//! Progress on a terminal (stderr), never off one nor with `--json`: planning's
//! phases, and an apply's steps per service and its phases after them.

use crate::term::safe;

/// Whether progress is drawn: on a terminal (stderr), never with `--json`.
fn shows_progress(json: bool) -> bool {
    use std::io::IsTerminal;
    !json && std::io::stderr().is_terminal()
}

/// A spinner for a phase whose size is not known (`{msg}` and the time so far), or a
/// bar counting `unit`s.
fn phase_style(unit: Option<&str>) -> Option<indicatif::ProgressStyle> {
    let template = match unit {
        None => "{spinner} {msg} ({elapsed})".to_string(),
        Some(unit) => format!("{{msg}} {{bar:40}} {{pos}}/{{len}} {unit}"),
    };
    indicatif::ProgressStyle::with_template(&template).ok()
}

/// What planning shows on a terminal: "reading the store" while files are listed,
/// read and parsed (a count would be a lie: the total is not known yet), then the
/// keys evaluated out of all.
pub(super) struct PlanBar(indicatif::ProgressBar);

impl PlanBar {
    pub(super) fn new(json: bool) -> PlanBar {
        if !shows_progress(json) {
            return PlanBar(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Some(style) = phase_style(None) {
            bar.set_style(style);
        }
        bar.set_message("reading the store");
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        PlanBar(bar)
    }

    /// `n` more keys evaluated of `total`.
    pub(super) fn tick(&self, n: u64, total: u64) {
        if self.0.length() != Some(total) {
            // The length first: a bar drawn before it would show "0/0".
            self.0.disable_steady_tick();
            self.0.set_length(total);
            if let Some(style) = phase_style(Some("keys")) {
                self.0.set_style(style);
            }
            self.0.set_message("evaluating");
        }
        self.0.inc(n);
    }

    pub(super) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A progress bar per service on a terminal, counting an apply's service steps.
pub(super) struct ServiceBars {
    multi: Option<indicatif::MultiProgress>,
    bars: std::sync::Mutex<Vec<(String, indicatif::ProgressBar)>>,
    /// The phase after the services: writing key files, the commit, the branch.
    phase: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl ServiceBars {
    /// Drawn on stderr when it is a terminal and the output is not JSON.
    pub(super) fn new(json: bool) -> ServiceBars {
        ServiceBars {
            multi: shows_progress(json)
                .then(|| indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())),
            bars: std::sync::Mutex::new(Vec::new()),
            phase: std::sync::Mutex::new(None),
        }
    }

    pub(super) fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }

    /// The bar of the apply's current phase, made on first use.
    fn phase_bar(&self) -> Option<indicatif::ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut phase = self
            .phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(
            phase
                .get_or_insert_with(|| multi.add(indicatif::ProgressBar::no_length()))
                .clone(),
        )
    }
}

impl crate::progress::ServiceSteps for ServiceBars {
    fn planned(&self, totals: &[(String, u64)]) {
        let Some(multi) = &self.multi else { return };
        let width = totals.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        let mut bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (service, steps) in totals {
            let bar = multi.add(indicatif::ProgressBar::new(*steps));
            let template = format!("{{msg:{width}}} {{bar:40}} {{pos}}/{{len}} steps");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.set_message(safe(service).into_owned());
            bars.push((service.clone(), bar));
        }
    }

    fn phase(&self, name: &'static str, total: Option<u64>) {
        let Some(bar) = self.phase_bar() else { return };
        bar.disable_steady_tick();
        bar.set_position(0);
        match total {
            Some(n) => bar.set_length(n),
            None => bar.unset_length(),
        }
        if let Some(style) = phase_style(total.map(|_| "files")) {
            bar.set_style(style);
        }
        bar.set_message(name);
        if total.is_none() {
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
        }
    }

    fn tick(&self) {
        if let Some(bar) = self
            .phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            bar.inc(1);
        }
    }

    fn done(&self, service: &str) {
        let bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, bar)) = bars.iter().find(|(s, _)| s == service) {
            // A retry is a step the plan did not count.
            if bar.position() >= bar.length().unwrap_or(0) {
                bar.inc_length(1);
            }
            bar.inc(1);
        }
    }
}
