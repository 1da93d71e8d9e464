//! How a saga ended, as its caller and a keyed request's journal see it:
//! the error a saga that did not commit turns into, and the outcome a
//! keyed saga records when it finishes (so a retry with its idempotency
//! key gets the first response).

use super::{SagaRecord, SagaState};
use crate::error::{CoordError, Result};
use crate::idempotency::{record, Outcome, StoredOutcome};
use crate::result::QueryResult;

/// The response a finished keyed saga gave (what its journal entry holds).
pub fn saga_response(saga: &SagaRecord) -> Option<Result<Vec<QueryResult>>> {
    let outcome = finished_outcome(saga)?;
    Some(StoredOutcome { fingerprint: String::new(), created_us: 0, outcome }.into_response())
}

/// The journal entry a finished keyed saga writes with its final state.
pub fn for_finished_saga(saga: &SagaRecord) -> Option<(String, Vec<u8>)> {
    let idem = saga.idempotency.as_ref()?;
    Some(record(&idem.key, finished_outcome(saga)?))
}

/// The outcome of a finished keyed saga; `None` while it runs or parks.
fn finished_outcome(saga: &SagaRecord) -> Option<Outcome> {
    let idem = saga.idempotency.as_ref()?;
    match saga.state {
        SagaState::Committed => Some(Outcome::Results(idem.committed_response(saga.steps.iter().map(|s| s.rows).sum()))),
        SagaState::RolledBack => match saga_outcome(saga) {
            Err(e) => Some(Outcome::SagaRolledBack { saga_id: saga.id.clone(), sqlstate: e.sqlstate().to_string(), message: e.to_string() }),
            Ok(()) => None,
        },
        _ => None,
    }
}

/// Turns a saga that did not commit into the caller's error.
pub fn saga_outcome(record: &SagaRecord) -> Result<()> {
    let id = &record.id;
    let reason = record.reason.clone().unwrap_or_default();
    match record.state {
        SagaState::Committed => Ok(()),
        SagaState::RolledBack => Err(CoordError::Saga {
            saga_id: id.clone(),
            parked: false,
            cause: record.cause_sqlstate.as_deref().and_then(tessera_model::sqlstate::known),
            message: format!("saga {id} rolled back: {reason}; the steps that ran were compensated (SHOW SAGA {id} shows the timeline)"),
        }),
        SagaState::NeedsOperator => Err(CoordError::Saga {
            saga_id: id.clone(),
            parked: true,
            cause: None,
            message: format!("saga {id} is parked and needs an operator: {reason}. Its timeline: SHOW SAGA {id}; fix the cause, then RESUME SAGA {id}"),
        }),
        SagaState::Running | SagaState::Compensating => Err(CoordError::Internal(format!("saga {id} stopped while {}", record.state.name()))),
    }
}
