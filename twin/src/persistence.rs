//! The persistence timer: an excursion becomes an alert only when it lasts.
//!
//! States: `Inside` → (sample outside) → `Outside { since }` → (outside for
//! strictly more than `persist_ns`) → `Alerted { since }` → (inside for
//! `clear_ns`) → `Inside`. An excursion that ends before the persistence time
//! leaves no trace but an [`TimerAction::ExcursionEnded`] for the record.

/// What the caller must do after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum TimerAction {
    /// The value just left the band (the excursion's onset).
    ExcursionStarted {
        /// Onset, ns.
        onset_ns: i64,
    },
    /// The value returned before the persistence time: no alert.
    ExcursionEnded {
        /// Onset, ns.
        onset_ns: i64,
        /// How long it was outside, ns.
        duration_ns: i64,
    },
    /// Outside for longer than the persistence time: raise the alert.
    Raise {
        /// Onset, ns.
        onset_ns: i64,
    },
    /// Back inside for the clear time after an alert: clear it.
    Clear {
        /// Onset of the excursion that raised the alert, ns.
        onset_ns: i64,
    },
}

/// Where the timer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerState {
    /// Inside the band.
    Inside,
    /// Outside since `since`, not alerted yet.
    Outside {
        /// Onset, ns.
        since: i64,
    },
    /// Alert raised for the excursion that began at `since`; `inside_since`
    /// is set while the value is back inside, waiting to clear.
    Alerted {
        /// Onset, ns.
        since: i64,
        /// Back inside since, ns.
        inside_since: Option<i64>,
    },
}

/// The timer. Feed it one boolean per sample with the sample's time.
#[derive(Clone, Debug)]
pub struct PersistenceTimer {
    persist_ns: i64,
    clear_ns: i64,
    state: TimerState,
}

impl PersistenceTimer {
    /// Alert after strictly more than `persist_ns` outside; clear after
    /// `clear_ns` back inside.
    pub fn new(persist_ns: i64, clear_ns: i64) -> Self {
        Self {
            persist_ns,
            clear_ns,
            state: TimerState::Inside,
        }
    }

    /// Current state.
    pub fn state(&self) -> TimerState {
        self.state
    }

    /// The process stopped: an open excursion ends here (it can no longer
    /// become an alert); a raised alert stays raised until it clears.
    pub fn suspend(&mut self, now_ns: i64) -> Option<TimerAction> {
        match self.state {
            TimerState::Outside { since } => {
                self.state = TimerState::Inside;
                Some(TimerAction::ExcursionEnded {
                    onset_ns: since,
                    duration_ns: now_ns - since,
                })
            }
            _ => None,
        }
    }

    /// Handle one sample: `outside` the band or not, at `now_ns`.
    pub fn handle_sample(&mut self, outside: bool, now_ns: i64) -> Option<TimerAction> {
        match (self.state, outside) {
            (TimerState::Inside, false) => None,
            (TimerState::Inside, true) => {
                self.state = TimerState::Outside { since: now_ns };
                Some(TimerAction::ExcursionStarted { onset_ns: now_ns })
            }
            (TimerState::Outside { since }, true) => {
                if now_ns - since > self.persist_ns {
                    self.state = TimerState::Alerted {
                        since,
                        inside_since: None,
                    };
                    Some(TimerAction::Raise { onset_ns: since })
                } else {
                    None
                }
            }
            (TimerState::Outside { since }, false) => {
                self.state = TimerState::Inside;
                Some(TimerAction::ExcursionEnded {
                    onset_ns: since,
                    duration_ns: now_ns - since,
                })
            }
            (TimerState::Alerted { since, .. }, true) => {
                self.state = TimerState::Alerted {
                    since,
                    inside_since: None,
                };
                None
            }
            (TimerState::Alerted { since, inside_since }, false) => {
                let back = inside_since.unwrap_or(now_ns);
                if now_ns - back >= self.clear_ns {
                    self.state = TimerState::Inside;
                    Some(TimerAction::Clear { onset_ns: since })
                } else {
                    self.state = TimerState::Alerted {
                        since,
                        inside_since: Some(back),
                    };
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    /// Drive the timer with samples every 50 ms, outside during `[from, to)`.
    fn drive(t: &mut PersistenceTimer, from_ms: i64, to_ms: i64, end_ms: i64) -> Vec<(i64, TimerAction)> {
        let mut acts = Vec::new();
        let mut now = 0;
        while now <= end_ms {
            if let Some(a) = t.handle_sample((from_ms..to_ms).contains(&now), now * MS) {
                acts.push((now, a));
            }
            now += 50;
        }
        acts
    }

    #[test]
    fn alerts_only_after_strictly_more_than_the_persistence_time() {
        let mut t = PersistenceTimer::new(3000 * MS, 1000 * MS);
        let acts = drive(&mut t, 1000, 10_000, 12_000);
        assert_eq!(acts[0], (1000, TimerAction::ExcursionStarted { onset_ns: 1000 * MS }));
        // At exactly 3 s (t = 4000 ms) nothing; the next sample raises.
        assert_eq!(acts[1], (4050, TimerAction::Raise { onset_ns: 1000 * MS }));
        assert_eq!(acts[2], (11_000, TimerAction::Clear { onset_ns: 1000 * MS }));
        assert_eq!(acts.len(), 3);
    }

    #[test]
    fn a_two_second_spike_is_observed_never_alerted() {
        let mut t = PersistenceTimer::new(3000 * MS, 1000 * MS);
        let acts = drive(&mut t, 1000, 3000, 10_000);
        assert_eq!(
            acts,
            vec![
                (1000, TimerAction::ExcursionStarted { onset_ns: 1000 * MS }),
                (
                    3000,
                    TimerAction::ExcursionEnded {
                        onset_ns: 1000 * MS,
                        duration_ns: 2000 * MS
                    }
                ),
            ]
        );
    }

    #[test]
    fn exactly_three_seconds_outside_does_not_alert() {
        let mut t = PersistenceTimer::new(3000 * MS, 1000 * MS);
        let acts = drive(&mut t, 1000, 4050, 6000);
        assert!(
            acts.iter().all(|(_, a)| !matches!(a, TimerAction::Raise { .. })),
            "{acts:?}"
        );
    }

    #[test]
    fn flicker_while_alerted_does_not_clear() {
        let mut t = PersistenceTimer::new(100 * MS, 1000 * MS);
        assert!(t.handle_sample(true, 0).is_some());
        assert_eq!(
            t.handle_sample(true, 200 * MS),
            Some(TimerAction::Raise { onset_ns: 0 })
        );
        assert_eq!(t.handle_sample(false, 300 * MS), None);
        assert_eq!(t.handle_sample(true, 400 * MS), None);
        assert_eq!(t.handle_sample(false, 500 * MS), None);
        assert_eq!(t.handle_sample(false, 1400 * MS), None);
        assert_eq!(
            t.handle_sample(false, 1500 * MS),
            Some(TimerAction::Clear { onset_ns: 0 })
        );
    }
}
