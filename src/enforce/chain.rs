//! Two backends applied together, e.g. tc shaping plus socket marking.

use std::os::fd::BorrowedFd;

use super::{Applied, EnforceError, Enforcer};
use crate::flow::{Rule, RuleId};

/// Applies every rule with `first`, then `second`; a failure of `second` undoes `first`, so a
/// rule is either in both or in neither.
///
/// The usual pair is `TcEnforcer` (shaping and isolation) with
/// [`SocketEnforcer::without_pacing`](super::SocketEnforcer::without_pacing) (DSCP marking,
/// which HTB does not do).
///
/// # Examples
///
/// ```
/// use qtoq::enforce::{Chain, Recording, SocketEnforcer};
/// let both = Chain::new(Recording::new(), SocketEnforcer::new().without_pacing());
/// # let _ = both;
/// ```
#[derive(Debug)]
pub struct Chain<A, B> {
    first: A,
    second: B,
    /// Rules as last applied, to put `first` back when `second` refuses a modification.
    applied: std::collections::HashMap<RuleId, Rule>,
}

impl<A: Enforcer, B: Enforcer> Chain<A, B> {
    /// Chains `first` and `second`.
    pub fn new(first: A, second: B) -> Self {
        Chain {
            first,
            second,
            applied: Default::default(),
        }
    }

    /// The two backends.
    pub fn parts(&self) -> (&A, &B) {
        (&self.first, &self.second)
    }
}

fn joined(a: Applied, b: Applied) -> Applied {
    Applied {
        summary: format!("{}; {}", a.summary, b.summary),
    }
}

#[async_trait::async_trait]
impl<A: Enforcer, B: Enforcer> Enforcer for Chain<A, B> {
    async fn install(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        let a = self.first.install(rule, socket).await?;
        match self.second.install(rule, socket).await {
            Ok(b) => {
                self.applied.insert(rule.id, rule.clone());
                Ok(joined(a, b))
            }
            Err(e) => {
                if let Err(undo) = self.first.remove(rule.id, socket).await {
                    tracing::warn!(rule = %rule.id, error = %undo, "could not undo first backend");
                }
                Err(e)
            }
        }
    }

    async fn modify(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        let a = self.first.modify(rule, socket).await?;
        match self.second.modify(rule, socket).await {
            Ok(b) => {
                self.applied.insert(rule.id, rule.clone());
                Ok(joined(a, b))
            }
            Err(e) => {
                if let Some(old) = self.applied.get(&rule.id) {
                    if let Err(undo) = self.first.modify(old, socket).await {
                        tracing::warn!(rule = %rule.id, error = %undo, "could not undo first backend");
                    }
                }
                Err(e)
            }
        }
    }

    async fn remove(
        &mut self,
        id: RuleId,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<(), EnforceError> {
        self.applied.remove(&id);
        // Try both even if one fails; report the first failure.
        let a = self.first.remove(id, socket).await;
        let b = self.second.remove(id, socket).await;
        a.and(b)
    }

    async fn shutdown(&mut self) -> Result<(), EnforceError> {
        self.applied.clear();
        let a = self.first.shutdown().await;
        let b = self.second.shutdown().await;
        a.and(b)
    }
}
