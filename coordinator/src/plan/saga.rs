//! Saga step plans: a statement's write and how each step of it is undone
//! (see [`crate::sql::saga`] for how compensations are derived).

use super::write::{InsertPlan, ModifyPlan, RowValidator};
use crate::catalog::{ShardGroupId, Table};
use std::sync::Arc;
use tessera_model::data::Value;

/// The write a saga statement makes.
pub enum WritePlan {
    Insert(InsertPlan),
    Modify(ModifyPlan),
}

impl WritePlan {
    pub fn table(&self) -> &Arc<Table> {
        match self {
            WritePlan::Insert(p) => &p.table,
            WritePlan::Modify(p) => &p.table,
        }
    }

    pub fn groups(&self) -> Vec<ShardGroupId> {
        match self {
            WritePlan::Insert(p) => p.by_group.keys().copied().collect(),
            WritePlan::Modify(p) => p.targets.iter().map(|(g, _)| *g).collect(),
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            WritePlan::Insert(_) => "INSERT",
            WritePlan::Modify(p) => p.verb(),
        }
    }

    /// The validator of the table's new rows.
    pub fn validator(&self) -> &RowValidator {
        match self {
            WritePlan::Insert(p) => &p.validator,
            WritePlan::Modify(p) => &p.validator,
        }
    }
}

/// How one updated column is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// `c = c ± e`: subtract the recorded delta from the current value.
    Delta,
    /// `c = constant`: put the before-image back if the value is unchanged.
    Restore,
}

pub enum Compensation {
    DeleteInserted,
    Reinsert,
    /// Per updated column: its index and how it is undone.
    Revert(Vec<(usize, Undo)>),
    /// `COMPENSATE WITH`: its text and plan.
    Explicit(String, Box<WritePlan>),
}

pub struct StatementPlan {
    pub write: WritePlan,
    pub compensation: Compensation,
    /// Primary keys named by a point UPDATE or DELETE: a step fails when
    /// one of them is missing or fails the statement's condition.
    pub required: Vec<Value>,
}

impl StatementPlan {
    pub fn table(&self) -> &Arc<Table> {
        self.write.table()
    }

    /// The compensation in words, for EXPLAIN and the timeline.
    pub fn describe_compensation(&self) -> String {
        let columns = &self.table().def.columns;
        match &self.compensation {
            Compensation::DeleteInserted => "DELETE the inserted rows".into(),
            Compensation::Reinsert => "re-insert the deleted rows".into(),
            Compensation::Revert(undo) => {
                let parts: Vec<String> = undo
                    .iter()
                    .map(|(c, how)| match how {
                        Undo::Delta => format!("take the change back out of {}", columns[*c].name),
                        Undo::Restore => format!("restore {} if unchanged since", columns[*c].name),
                    })
                    .collect();
                parts.join(", ")
            }
            Compensation::Explicit(sql, _) => format!("COMPENSATE WITH {sql}"),
        }
    }

    /// The primary keys named by the statement that live on `group`.
    pub fn required_on(&self, group: ShardGroupId) -> Vec<&Value> {
        let table = self.table();
        self.required.iter().filter(|pk| table.route(pk) == group).collect()
    }
}
