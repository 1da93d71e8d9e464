//! Statements under the saga protocol, and the saga admin statements.
//!
//! - `SET transaction_protocol = 'saga' | '2pc'` (session), `SET LOCAL ...`
//!   (the open transaction, before its first statement), `SHOW
//!   transaction_protocol`.
//! - In a saga (BEGIN under the saga protocol), INSERT, UPDATE and DELETE
//!   are planned and checked at once (a step that cannot be compensated is
//!   refused here) and run as saga steps at COMMIT. Reads see committed
//!   data, not the queued statements.
//! - Outside BEGIN a write under the saga protocol is a saga of one
//!   statement.
//! - Writes that all land on one shard group commit in one phase instead:
//!   a single group needs no saga.
//! - `SHOW SAGAS`, `SHOW SAGA <id>`, `RESUME SAGA <id>`.

use super::{Call, Engine};
use crate::error::{CoordError, Result};
use crate::idempotency::SagaIdempotency;
use crate::plan::saga::{Compensation, StatementPlan};
use crate::result::QueryResult;
use crate::saga::orchestrator::short;
use crate::saga::outcome::saga_outcome;
use crate::saga::{SagaRecord, SagaStatement};
use crate::session::Session;
use crate::sql::{first_word, parse, saga as saga_sql};
use sqlparser::ast::{self, Statement};
use std::collections::BTreeSet;
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;
use tessera_model::txn::Protocol;

const PROTOCOL_SETTING: &str = "transaction_protocol";

fn is_protocol_setting(name: &ast::ObjectName) -> bool {
    name.to_string().eq_ignore_ascii_case(PROTOCOL_SETTING)
}

impl Engine {
    /// SET / SHOW transaction_protocol; `None` for any other statement.
    pub(super) async fn protocol_statement(&self, session: &mut Session, statement: &Statement) -> Option<Result<QueryResult>> {
        match statement {
            Statement::Set(ast::Set::SingleAssignment { scope, variable, values, .. }) if is_protocol_setting(variable) => {
                Some(self.set_protocol(session, *scope == Some(ast::ContextModifier::Local), values).await)
            }
            Statement::ShowVariable { variable } if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case(PROTOCOL_SETTING) => {
                let current = if session.saga.is_some() {
                    Protocol::Saga
                } else if session.txn.is_some() {
                    Protocol::TwoPhaseCommit
                } else {
                    session.protocol
                };
                Some(Ok(QueryResult::rows(&[(PROTOCOL_SETTING, DataType::Text)], vec![vec![Value::Text(current.name().into())]])))
            }
            _ => None,
        }
    }

    async fn set_protocol(&self, session: &mut Session, local: bool, values: &[ast::Expr]) -> Result<QueryResult> {
        let value = match values {
            [ast::Expr::Value(v)] => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            [ast::Expr::Identifier(i)] => i.value.clone(),
            _ => String::new(),
        };
        let protocol = Protocol::parse(&value).ok_or_else(|| {
            CoordError::invalid_value(
                format!("invalid value for parameter \"{PROTOCOL_SETTING}\": \"{value}\" (use 'saga' or '2pc')"),
                sqlstate::INVALID_PARAMETER_VALUE,
            )
        })?;
        if !local {
            session.protocol = protocol;
            return Ok(QueryResult::command("SET"));
        }
        // SET LOCAL: the open transaction switches, before it has done anything.
        match (protocol, session.txn.as_ref(), session.saga.as_ref()) {
            (Protocol::Saga, Some(txn), _) if txn.groups().is_empty() && !txn.failed => {
                let txn = session.txn.take().expect("checked above");
                self.txns.rollback(txn).await;
                session.saga = Some(Default::default());
            }
            (Protocol::TwoPhaseCommit, _, Some(draft)) if draft.statements.is_empty() && !draft.failed => {
                session.saga = None;
                session.txn = Some(self.txns.begin(true));
            }
            (Protocol::Saga, None, Some(_)) | (Protocol::TwoPhaseCommit, Some(_), None) => {}
            (_, None, None) => {
                return Err(CoordError::Invalid(format!("SET LOCAL {PROTOCOL_SETTING} only has an effect inside a transaction block; use SET for the session")))
            }
            _ => return Err(CoordError::Invalid(format!("SET LOCAL {PROTOCOL_SETTING} must come before the transaction's first statement"))),
        }
        Ok(QueryResult::command("SET"))
    }

    /// A statement while a saga is open (BEGIN under the saga protocol).
    pub(super) async fn in_saga(&self, session: &mut Session, statement: &Statement, call: Call<'_>) -> Result<QueryResult> {
        let draft = session.saga.as_mut().expect("a saga is open");
        match statement {
            Statement::StartTransaction { .. } => Ok(QueryResult::command("BEGIN")),
            Statement::Commit { chain: false, .. } => {
                let draft = session.saga.take().expect("a saga is open");
                if draft.failed {
                    return Ok(QueryResult::command("ROLLBACK"));
                }
                self.run_saga(draft.statements, draft.plans, call.saga_idempotency("COMMIT")).await?;
                Ok(QueryResult::command("COMMIT"))
            }
            Statement::Rollback { chain: false, savepoint: None } => {
                session.saga = None;
                Ok(QueryResult::command("ROLLBACK"))
            }
            _ if draft.failed => Err(CoordError::InFailedTransaction),
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let result = saga_sql::plan_parsed(&self.catalog, statement, call.compensation);
                match result {
                    Ok(plan) => {
                        let verb = plan.write.verb();
                        draft.statements.push(saga_statement(statement, &plan));
                        draft.plans.push(plan);
                        Ok(QueryResult::command(&format!("QUEUED {verb}")))
                    }
                    Err(e) => {
                        draft.failed = true;
                        Err(e)
                    }
                }
            }
            Statement::Query(q) if q.locks.is_empty() => self.autocommit(statement, Call::new(call.protocol, None), session.statement_timeout).await,
            Statement::Query(_) => Err(CoordError::Unsupported("SELECT ... FOR UPDATE in a saga (a saga holds no locks between its steps)".into())),
            Statement::Explain { statement: inner, analyze: false, .. } => {
                let offset = draft.plans.iter().map(|p| p.write.groups().len()).sum();
                self.explain_saga(inner, call.compensation, offset)
            }
            Statement::CreateTable(_) | Statement::Drop { .. } => Err(CoordError::NotInTransaction(first_word(statement) + " TABLE")),
            Statement::Commit { .. } | Statement::Rollback { .. } => Err(CoordError::Unsupported("AND CHAIN and savepoints".into())),
            other => self.utility(other).await,
        }
    }

    /// An INSERT, UPDATE or DELETE outside BEGIN under the saga protocol.
    pub(super) async fn autocommit_saga(&self, statement: &Statement, call: Call<'_>) -> Result<QueryResult> {
        let plan = saga_sql::plan_parsed(&self.catalog, statement, call.compensation)?;
        let verb = plan.write.verb();
        let rows = self.run_saga(vec![saga_statement(statement, &plan)], vec![plan], call.saga_idempotency(verb)).await?;
        Ok(QueryResult::modified(if verb == "INSERT" { format!("INSERT 0 {rows}") } else { format!("{verb} {rows}") }, rows))
    }

    /// Runs saga statements: in one local transaction when they all land on
    /// one shard group, else as a saga. Returns the rows written.
    async fn run_saga(&self, statements: Vec<SagaStatement>, plans: Vec<StatementPlan>, idempotency: Option<SagaIdempotency>) -> Result<u64> {
        let groups: BTreeSet<_> = plans.iter().flat_map(|p| p.write.groups()).collect();
        if groups.len() <= 1 {
            return self.run_locally(&statements, &plans, idempotency).await;
        }
        let record = self.sagas.run(statements, &plans, idempotency).await?;
        saga_outcome(&record)?;
        Ok(record.steps.iter().map(|s| s.rows).sum())
    }

    /// Saga statements on a single group: one ordinary transaction, with
    /// the saga rule that a row named by primary key must exist.
    async fn run_locally(&self, statements: &[SagaStatement], plans: &[StatementPlan], idempotency: Option<SagaIdempotency>) -> Result<u64> {
        let mut txn = self.txns.begin(false);
        let mut rows = 0;
        for (statement, plan) in statements.iter().zip(plans) {
            let parsed = parse(&statement.sql)?.remove(0);
            let result = match self.in_transaction(&mut txn, &parsed).await {
                Ok(r) => r,
                Err(e) => {
                    self.txns.rollback(txn).await;
                    return Err(e);
                }
            };
            let required: BTreeSet<String> = plan.required.iter().map(|v| v.to_string()).collect();
            if result.rows_affected < required.len() as u64 {
                self.txns.rollback(txn).await;
                let table = plan.table();
                return Err(CoordError::NoData(format!(
                    "{} matched {} of the {} rows of \"{}\" it names by {} (a saga statement must find every row it names)",
                    plan.write.verb(),
                    result.rows_affected,
                    required.len(),
                    table.name(),
                    table.def.pk_column().name
                )));
            }
            rows += result.rows_affected;
        }
        let extra = idempotency.map(|i| crate::idempotency::record(&i.key, crate::idempotency::Outcome::Results(i.committed_response(rows))));
        self.txns.commit_with(txn, extra.into_iter().collect()).await?;
        Ok(rows)
    }

    /// EXPLAIN under the saga protocol: the steps and their compensations.
    pub(super) fn explain_saga(&self, statement: &Statement, compensation: Option<&str>, first_step: usize) -> Result<QueryResult> {
        if !matches!(statement, Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)) {
            if compensation.is_some() {
                return Err(CoordError::Invalid("COMPENSATE WITH may only follow an INSERT, UPDATE or DELETE".into()));
            }
            return self.explain(statement);
        }
        let plan = saga_sql::plan_parsed(&self.catalog, statement, compensation)?;
        let mut result = self.explain(statement)?;
        result.rows.retain(|r| !matches!(&r[0], Value::Text(t) if t.starts_with("  commit:")));
        let groups = plan.write.groups();
        let addresses: std::collections::HashMap<_, _> = self.shards.groups().into_iter().collect();
        let mut lines = Vec::new();
        if groups.len() <= 1 {
            lines.push("  commit: one phase (1PC) when the whole transaction writes to one shard group; otherwise each group below is a saga step".into());
        }
        lines.push("  protocol: saga (steps commit one by one; other transactions see each step as it commits)".into());
        for (n, g) in groups.iter().enumerate() {
            lines.push(format!(
                "  step {}: {} on shard group {g} ({}), a local one-phase transaction",
                first_step + n + 1,
                plan.write.verb(),
                addresses.get(g).map(String::as_str).unwrap_or("?")
            ));
            lines.push(format!("    compensation: {}", plan.describe_compensation()));
        }
        if let Some(required) = (!plan.required.is_empty()).then(|| plan.required.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")) {
            lines.push(format!("  required rows: {} IN ({required}); a missing one fails its step and rolls the saga back", plan.table().def.pk_column().name));
        }
        result.rows.extend(lines.into_iter().map(|l| vec![Value::Text(l)]));
        result.tag = format!("SELECT {}", result.rows.len());
        result.rows_affected = result.rows.len() as u64;
        Ok(result)
    }

    /// `SHOW SAGAS`, `SHOW SAGA <id>`, `RESUME SAGA <id>`; `None` for other text.
    /// (See [`saga_sql::is_admin`].)
    pub(super) async fn saga_admin(&self, sql: &str) -> Option<Result<QueryResult>> {
        let text = sql.trim().trim_end_matches(';').trim();
        let words: Vec<&str> = text.split_whitespace().collect();
        let lower: Vec<String> = words.iter().take(2).map(|w| w.to_ascii_lowercase()).collect();
        match (lower.iter().map(String::as_str).collect::<Vec<_>>().as_slice(), words.len()) {
            (["show", "sagas"], 2) => Some(Ok(self.show_sagas())),
            (["show", "saga"], 3) => Some(self.sagas.get(words[2]).map(|r| timeline(&r))),
            (["resume", "saga"], 3) => Some(match self.sagas.resume(words[2]).await {
                Ok(record) => saga_outcome(&record).map(|_| {
                    let mut result = timeline(&record);
                    result.tag = "RESUME SAGA".into();
                    result
                }),
                Err(e) => Err(e),
            }),
            (["show", "saga"] | ["resume", "saga"], _) => Some(Err(CoordError::Syntax(format!("expected {} SAGA <id>", words[0].to_uppercase())))),
            _ => None,
        }
    }

    fn show_sagas(&self) -> QueryResult {
        let rows = self
            .sagas
            .list()
            .into_iter()
            .map(|r| {
                vec![
                    Value::Text(r.id.clone()),
                    Value::Text(r.state.name().into()),
                    Value::Text(r.progress()),
                    Value::Text(clock(Some(r.started_us))),
                    Value::Text(clock(r.finished_us)),
                    Value::Text(r.reason.clone().unwrap_or_default()),
                ]
            })
            .collect();
        QueryResult::rows(saga_sql::SAGAS_COLUMNS, rows)
    }
}

fn saga_statement(statement: &Statement, plan: &StatementPlan) -> SagaStatement {
    let compensation = match &plan.compensation {
        Compensation::Explicit(sql, _) => Some(sql.clone()),
        _ => None,
    };
    SagaStatement { sql: statement.to_string(), compensation, table_id: Some(plan.table().def.id) }
}

/// A saga's timeline: each step, then each compensation in the order they ran.
pub fn timeline(record: &SagaRecord) -> QueryResult {
    struct Entry<'a> {
        action: &'static str,
        state: &'static str,
        attempts: u32,
        started: Option<u64>,
        finished: Option<u64>,
        detail: String,
        error: &'a Option<String>,
    }
    let row = |n: usize, group: u32, e: Entry| {
        let detail = match e.error {
            Some(error) => format!("{} -- {error}", e.detail),
            None => e.detail,
        };
        vec![
            Value::Int(n as i64 + 1),
            Value::Int(group as i64),
            Value::Text(e.action.into()),
            Value::Text(e.state.into()),
            Value::Int(e.attempts as i64),
            Value::Text(clock(e.started)),
            Value::Text(clock(e.finished)),
            Value::Text(detail),
        ]
    };
    let mut rows = Vec::new();
    for (n, s) in record.steps.iter().enumerate() {
        let detail = short(&record.statements[s.statement].sql);
        let entry =
            Entry { action: "step", state: s.state.name(), attempts: s.attempts, started: s.started_us, finished: s.finished_us, detail, error: &s.error };
        rows.push(row(n, s.group, entry));
    }
    for (n, s) in record.steps.iter().enumerate().rev().filter(|(_, s)| s.comp_state != crate::saga::CompensationState::None) {
        let entry = Entry {
            action: "compensation",
            state: s.comp_state.name(),
            attempts: s.comp_attempts,
            started: s.comp_started_us,
            finished: s.comp_finished_us,
            detail: s.compensation.clone(),
            error: &s.comp_error,
        };
        rows.push(row(n, s.group, entry));
    }
    let mut result = QueryResult::rows(saga_sql::TIMELINE_COLUMNS, rows);
    result.tag = format!("SAGA {} {}", record.id, record.state.name());
    result
}

/// UTC wall-clock time of day with milliseconds, e.g. `14:03:07.512`.
pub fn clock(us: Option<u64>) -> String {
    let Some(us) = us else { return String::new() };
    let ms = us / 1000;
    let day_ms = ms % 86_400_000;
    format!("{:02}:{:02}:{:02}.{:03}", day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formats_time_of_day() {
        assert_eq!(clock(None), "");
        assert_eq!(clock(Some(((13 * 3600 + 4 * 60 + 5) * 1000 + 67) * 1000)), "13:04:05.067");
    }
}
