//! A decision left to the service below: with a shared store, the admission can ride on the
//! round trip the leaf makes anyway (a lease on the account it was given), so a request
//! costs one round trip to the store on admission instead of two, and one at the end.
//!
//! The layer (with [`RateLimitLayer::defer_to_leaf`](super::RateLimitLayer::defer_to_leaf))
//! puts a [`DeferredAdmission`] on the request instead of deciding. The first attempt to
//! reach the leaf [`claim`](DeferredAdmission::claim)s it and decides, before anything is
//! sent upstream: with its own round trip ([`Claim::decide_alone`]) or in one with its lease
//! ([`Claim::decide`] with the combined answer). A claim dropped undecided (the attempt gave
//! up) opens the decision again. Whatever no leaf claimed (a cache hit, a request refused
//! before any account was picked) the layer decides once the answer is there: a refusal
//! then drops the answer.
//!
//! At the end, a leaf whose lease should go in the same round trip as the token settlement
//! parks its release on the ticket ([`DeferredAdmission::defer_end`]); the layer hands it
//! the settlement ([`TokenSettle`]) instead of settling through the store.

use super::layer::{admitted, Charge, Shared};
use super::store::{Admission, Ask, Decision, StoreUnavailable};
use super::{RateLimitSlot, Throttled};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

/// The tokens to charge (`delta > 0`) or refund (`delta < 0`) to `key`'s token bucket of
/// `per_minute` tokens, when the answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSettle {
    /// The client label.
    pub key: Arc<str>,
    /// The bucket's size.
    pub per_minute: NonZeroU32,
    /// Tokens to charge or refund.
    pub delta: i64,
}

/// What a leaf runs at the end of the request, with the token settlement when there is
/// one to make (`None`: nothing to settle).
pub type EndHook = Box<dyn FnOnce(Option<TokenSettle>) + Send>;

/// A request's rate-limit decision, left to the leaf (see the module docs). Clones share
/// the decision.
#[derive(Clone)]
pub struct DeferredAdmission(Arc<Ticket>);

impl std::fmt::Debug for DeferredAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredAdmission")
            .field("key", &self.0.key)
            .field("ask", &self.0.ask)
            .finish_non_exhaustive()
    }
}

pub(super) struct Ticket {
    shared: Arc<Shared>,
    key: Arc<str>,
    ask: Ask,
    slot: Option<RateLimitSlot>,
    state: Mutex<State>,
}

enum State {
    /// Nobody decided yet.
    Open,
    /// A claim is deciding.
    Claimed,
    /// Refused: the claimant answered the refusal.
    Refused,
    /// Admitted; an end may be parked to go with the settlement.
    Admitted { parked: Option<EndHook> },
    /// The answer ended and the tokens were settled (an end parked now runs alone).
    Settled,
}

/// How the decision stood when the inner service answered.
pub(super) enum AfterInner {
    /// No leaf decided: the layer does.
    Undecided,
    /// A leaf admitted it: the charge to settle at the end (through the ticket).
    Admitted(Option<Charge>),
    /// A leaf refused it, or is still deciding: the answer stands as it is.
    Done,
}

impl DeferredAdmission {
    pub(super) fn new(
        shared: Arc<Shared>,
        key: Arc<str>,
        ask: Ask,
        slot: Option<RateLimitSlot>,
    ) -> Self {
        Self(Arc::new(Ticket {
            shared,
            key,
            ask,
            slot,
            state: Mutex::new(State::Open),
        }))
    }

    /// The decision, for the first attempt that comes for it (`None`: decided already, or
    /// being decided). Every call of the leaf asks, so a call after the first (a web search,
    /// then the answer) also runs the end an earlier call parked: that call is over and its
    /// end waits no longer.
    pub fn claim(&self) -> Option<Claim> {
        let mut state = self.0.state();
        match &mut *state {
            State::Open => {
                *state = State::Claimed;
                Some(Claim::new(&self.0))
            }
            State::Admitted { parked } => {
                let earlier = parked.take();
                drop(state);
                if let Some(end) = earlier {
                    end(None);
                }
                None
            }
            _ => None,
        }
    }

    /// Parks `end` until the layer settles the request's tokens (or another call of the
    /// request starts), when it was admitted with tokens still to settle; else gives `end`
    /// back, to be run now.
    pub fn defer_end(&self, end: EndHook) -> Result<(), EndHook> {
        let mut state = self.0.state();
        match &mut *state {
            State::Admitted { parked } if parked.is_none() && self.0.ask.tokens.is_some() => {
                *parked = Some(end);
                Ok(())
            }
            _ => Err(end),
        }
    }

    pub(super) fn after_inner(&self) -> AfterInner {
        let mut state = self.0.state();
        match &*state {
            State::Open => {
                // The layer decides now; nobody may claim behind it.
                *state = State::Claimed;
                AfterInner::Undecided
            }
            State::Admitted { .. } => AfterInner::Admitted(self.0.charge(true)),
            State::Claimed | State::Refused | State::Settled => AfterInner::Done,
        }
    }

    /// The layer's own decision, through the store, for what no leaf claimed (after
    /// [`after_inner`](Self::after_inner) said so: the ticket is claimed by the layer).
    pub(super) async fn decide_here<E>(&self) -> Result<Option<Charge>, E>
    where
        E: From<Throttled> + From<StoreUnavailable>,
    {
        Claim::new(&self.0).decide_alone::<E>().await?;
        Ok(self.0.charge(false))
    }

    /// Settles `delta` with the parked end when there is one (one round trip for both),
    /// through the store otherwise.
    pub(super) fn settle(&self, per_minute: NonZeroU32, delta: i64) {
        let ticket = &self.0;
        let parked = match std::mem::replace(&mut *ticket.state(), State::Settled) {
            State::Admitted { parked } => parked,
            _ => None,
        };
        let settle = (delta != 0).then(|| TokenSettle {
            key: Arc::clone(&ticket.key),
            per_minute,
            delta,
        });
        match (parked, settle) {
            (Some(end), settle) => end(settle),
            (None, Some(settle)) => {
                ticket
                    .shared
                    .store
                    .settle_tokens(&settle.key, per_minute, settle.delta)
            }
            (None, None) => {}
        }
    }
}

impl Ticket {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token charge of an admitted request; settled through this ticket when `parks`.
    fn charge(self: &Arc<Self>, parks: bool) -> Option<Charge> {
        self.ask.tokens.map(|(per_minute, estimate)| Charge {
            shared: Arc::clone(&self.shared),
            key: Arc::clone(&self.key),
            per_minute,
            estimate,
            ticket: parks.then(|| DeferredAdmission(Arc::clone(self))),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // An end still parked when nobody settles (the answer was dropped unread) runs now.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let State::Admitted { parked } = state {
            if let Some(end) = parked.take() {
                end(None);
            }
        }
    }
}

/// The right to decide a [`DeferredAdmission`]; dropped undecided, it opens the decision
/// again.
pub struct Claim {
    ticket: Arc<Ticket>,
    decided: bool,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("key", &self.ticket.key)
            .field("ask", &self.ticket.ask)
            .finish()
    }
}

impl Claim {
    fn new(ticket: &Arc<Ticket>) -> Self {
        Self {
            ticket: Arc::clone(ticket),
            decided: false,
        }
    }

    /// Whose budget (the client label).
    pub fn key(&self) -> &str {
        &self.ticket.key
    }

    /// What the request asks of the budget.
    pub fn ask(&self) -> Ask {
        self.ticket.ask
    }

    /// Takes a decision made elsewhere (one round trip with the leaf's own): recorded on the
    /// request's slot; a refusal as [`Throttled`] (counted), to be answered as it is.
    pub fn decide(mut self, admission: Admission) -> Result<(), Throttled> {
        self.decided = true;
        let ticket = &self.ticket;
        let refused = admission.is_err();
        let decision = admitted(
            &ticket.shared,
            &ticket.key,
            ticket.ask,
            ticket.slot.as_ref(),
            admission,
        );
        *ticket.state() = if refused {
            State::Refused
        } else {
            State::Admitted { parked: None }
        };
        decision.map(drop)
    }

    /// Decides through the store alone (its own round trip when it is shared).
    pub async fn decide_alone<E>(self) -> Result<(), E>
    where
        E: From<Throttled> + From<StoreUnavailable>,
    {
        let admission = match self
            .ticket
            .shared
            .store
            .admit(&self.ticket.key, self.ticket.ask)
        {
            Decision::Now(admission) => admission,
            Decision::Later(decision) => decision.await?,
        };
        Ok(self.decide(admission)?)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.decided {
            let mut state = self.ticket.state();
            if matches!(*state, State::Claimed) {
                *state = State::Open;
            }
        }
    }
}
