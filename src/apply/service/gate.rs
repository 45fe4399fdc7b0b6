//! How many service steps run at once, and how fast (SPEC §7): each service's
//! `max_concurrency` (a counting semaphore) and `rate_limit` (a sliding log of step
//! starts: no window of the limit's length ever holds more starts than it allows,
//! bursts included), and its `retries` of a step that may pass when tried again, with
//! exponential backoff. `[apply] parallelism` is the number of apply's workers, each
//! running one step at a time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::provider::StepError;
use crate::store::settings::Rate;
use crate::store::Settings;

/// The limits of every service with any.
pub(crate) struct Gate {
    services: BTreeMap<String, Limits>,
}

struct Limits {
    slots: Option<Slots>,
    window: Option<Window>,
    retries: u32,
}

/// A counting semaphore.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// The starts of the last `rate.steps` steps.
struct Window {
    rate: Rate,
    starts: Mutex<VecDeque<Instant>>,
}

/// The first retry waits this long; each next one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gate {
    pub(crate) fn new(settings: &Settings) -> Gate {
        let services = settings
            .services
            .iter()
            .map(|(name, s)| {
                let limits = Limits {
                    slots: s.max_concurrency.map(|n| Slots {
                        free: Mutex::new(n),
                        freed: Condvar::new(),
                    }),
                    window: s.rate_limit.map(|rate| Window {
                        rate,
                        starts: Mutex::new(VecDeque::with_capacity(rate.steps as usize)),
                    }),
                    retries: s.retries,
                };
                (name.clone(), limits)
            })
            .collect();
        Gate { services }
    }

    /// Runs one step of `service` within its limits: `call` again after a failure
    /// marked `retry`, up to the service's `retries`, each try a step of its own.
    pub(crate) fn step<T>(
        &self,
        service: &str,
        mut call: impl FnMut() -> Result<T, StepError>,
    ) -> Result<T, StepError> {
        let Some(limits) = self.services.get(service) else {
            return call();
        };
        let mut backoff = FIRST_BACKOFF;
        for tried in 0.. {
            let result = limits.once(&mut call);
            match result {
                Err(e) if e.retry && tried < limits.retries => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(mut e) if tried > 0 => {
                    e.message = format!("{} (tried {} times)", e.message, tried + 1);
                    return Err(e);
                }
                other => return other,
            }
        }
        unreachable!("the loop returns")
    }
}

impl Limits {
    fn once<T>(&self, call: &mut impl FnMut() -> Result<T, StepError>) -> Result<T, StepError> {
        let _slot = self.slots.as_ref().map(Slots::take);
        if let Some(w) = &self.window {
            w.admit();
        }
        call()
    }
}

/// A taken slot, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn take(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

impl Window {
    /// Waits until one more start keeps every window of `per` within `steps`, and
    /// records it. The window is kept a fiftieth longer than the limit: the service
    /// sees a step a little after keyrot starts it, and not always equally late.
    fn admit(&self) {
        let per = Duration::from_secs(self.rate.per.secs().max(1) as u64);
        let per = per + per / 50;
        loop {
            let mut starts = lock(&self.starts);
            let now = Instant::now();
            while starts.front().is_some_and(|t| now.duration_since(*t) >= per) {
                starts.pop_front();
            }
            if starts.len() < self.rate.steps as usize {
                starts.push_back(now);
                return;
            }
            let wait = per.saturating_sub(now.duration_since(starts[0]));
            drop(starts);
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::settings::Service;
    use crate::time::Dur;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn gate(max_concurrency: Option<usize>, rate: Option<&str>, retries: u32) -> Gate {
        let mut settings = Settings::default();
        settings.services.insert(
            "s".into(),
            Service {
                max_concurrency,
                rate_limit: rate.map(|r| Rate::parse(r).unwrap()),
                retries,
                ..Service::default()
            },
        );
        Gate::new(&settings)
    }

    #[test]
    fn no_window_holds_more_starts_than_the_rate_even_from_many_threads() {
        let g = gate(None, Some("20/s"), 0);
        let starts = Mutex::new(Vec::new());
        let began = Instant::now();
        let items: Vec<u32> = (0..50).collect();
        crate::parallel::map_workers(&items, 10, |_| {
            g.step("s", || {
                lock(&starts).push(Instant::now());
                Ok::<_, StepError>(())
            })
        });
        let mut starts = starts.into_inner().unwrap();
        starts.sort();
        for (i, t) in starts.iter().enumerate() {
            let within = starts[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(within <= 20, "{within} starts within a second of start {i}");
        }
        // 50 steps at 20/s: the third batch cannot start before two windows passed.
        assert!(began.elapsed() >= Duration::from_secs(2));
        assert!(began.elapsed() < Duration::from_secs(4), "{:?}", began.elapsed());
    }

    #[test]
    fn max_concurrency_caps_the_steps_in_flight() {
        let g = gate(Some(2), None, 0);
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<u32> = (0..12).collect();
        crate::parallel::map_workers(&items, 6, |_| {
            g.step("s", || {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, StepError>(())
            })
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
        // Another service, or none declared: no limit of its own.
        assert_eq!(g.step("other", || Ok::<_, StepError>(7)).unwrap(), 7);
    }

    #[test]
    fn only_retryable_failures_are_tried_again_and_say_how_often() {
        let g = gate(None, None, 2);
        let tries = AtomicUsize::new(0);
        let out = g.step("s", || {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(StepError {
                message: "busy".into(),
                retry: true,
            })
        });
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(out.unwrap_err().message, "busy (tried 3 times)");

        let tries = AtomicUsize::new(0);
        let out = g.step("s", || {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(StepError::new("refused".into()))
        });
        assert_eq!(
            (tries.load(Ordering::SeqCst), out.unwrap_err().message.as_str()),
            (1, "refused")
        );

        let tries = AtomicUsize::new(0);
        let out = g.step("s", || {
            if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(StepError {
                    message: "busy".into(),
                    retry: true,
                })
            } else {
                Ok(Dur::ZERO)
            }
        });
        assert_eq!(out.unwrap(), Dur::ZERO);
    }
}
