//! Recomputing stored costs with the current price table (`llmtap reprice`).
//!
//! Only cost changes: each changed call's record and summary are rewritten, its
//! invocation is rolled up again from its calls, and the cost in the 15-minute and
//! all-time rollups moves by the difference, so lists, summaries and `/agents` agree.

use super::{decode, round_prefix, SledStore, StoreError};
use crate::record::{roll_up, CallRecord, Cost};
use crate::store::index::RollupCell;
use crate::store::plan::{list_run, repriced_deltas, Listed, RollupSum};
use crate::store::stored::reprice_call;
use crate::store::summary::{self, InvocationSummary};
use crate::store::types::RepriceReport;
use std::collections::BTreeSet;

impl SledStore {
    /// Reprices the calls that started in `[from_us, to_us)`. `price` returns the new
    /// cost of a call (from its provider, models and usage).
    pub fn reprice(
        &self,
        from_us: u64,
        to_us: u64,
        mut price: impl FnMut(&CallRecord) -> Option<Cost>,
    ) -> Result<RepriceReport, StoreError> {
        let mut report = RepriceReport::default();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let (mut added, mut taken) = (RollupSum::default(), RollupSum::default());
        for entry in self.calls.iter() {
            let (key, value) = entry?;
            let mut call: CallRecord = decode(&key, &value)?;
            if call.started_at_us < from_us || call.started_at_us >= to_us {
                continue;
            }
            report.examined += 1;
            let Some(old_pusd) = reprice_call(&mut call, &mut price) else {
                continue;
            };
            let (add, take) = repriced_deltas(&call, old_pusd);
            added.add(add);
            taken.add(take);
            self.call_sum.insert(
                call.id.as_bytes(),
                summary::encode_header_only(&Listed::of(&call).facets),
            )?;
            self.calls
                .insert(call.id.as_bytes(), super::encode_call_meta(&call)?)?;
            touched.insert(call.invocation_id.clone());
            report.changed += 1;
        }
        self.change_rollups(&added.into_deltas(), RollupCell::merge)?;
        self.change_rollups(&taken.into_deltas(), RollupCell::subtract)?;
        for id in &touched {
            self.reroll_invocation(id)?;
            report.invocations += 1;
        }
        self.flush()?;
        Ok(report)
    }

    fn reroll_invocation(&self, id: &str) -> Result<(), StoreError> {
        let prefix = round_prefix(id);
        let mut inv = None;
        for entry in self.inv_rounds.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let call_id = String::from_utf8_lossy(&key[prefix.len() + 4..]).into_owned();
            if let Some(call) = self.get_call_meta(&call_id)? {
                inv = Some(roll_up(inv, &call));
            }
        }
        let Some(inv) = inv else { return Ok(()) };
        let old: Option<InvocationSummary> = match self.inv_sum.get(id.as_bytes())? {
            Some(stored) => match summary::split_stored(&stored) {
                Some((_, json)) => Some(decode(id.as_bytes(), json)?),
                None => None,
            },
            None => None,
        };
        let listed = list_run(&inv, old.as_ref(), []);
        self.inv_sum.insert(
            id.as_bytes(),
            summary::encode_stored(&listed.facets, &listed.summary).map_err(StoreError::Encode)?,
        )?;
        self.invocations
            .insert(id.as_bytes(), super::encode_invocation(&inv)?)?;
        Ok(())
    }
}
