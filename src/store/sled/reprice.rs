//! Recomputing stored costs with the current price table (`llmtap reprice`).
//!
//! Only cost changes: each changed call's record and summary are rewritten, its
//! invocation is rolled up again from its calls, and the cost in the 15-minute and
//! all-time rollups moves by the difference, so lists, summaries and `/agents` agree.

use super::{decode, round_prefix, SledStore, StoreError};
use crate::record::{roll_up, CallRecord, Cost};
use crate::store::index::{self, RollupCell};
use crate::store::stored::{priced_pusd, reprice_call};
use crate::store::summary::{self, CallSummary, InvocationSummary};
use crate::store::types::RepriceReport;
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
        let mut deltas: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
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
            let new_pusd = priced_pusd(&call.cost);
            let m = &call.metadata;
            for scope in index::scopes(m.tenant.as_deref(), m.agent.as_deref()) {
                for cell in [
                    index::bucket_key(&scope, call.started_at_us),
                    scope_all(&scope),
                ] {
                    let d = deltas.entry(cell).or_default();
                    d.0 += old_pusd;
                    d.1 += new_pusd;
                }
            }
            let summary = CallSummary::from_record(&call);
            self.call_sum.insert(
                call.id.as_bytes(),
                summary::encode_header_only(&summary.facets()),
            )?;
            self.calls
                .insert(call.id.as_bytes(), super::encode_call_meta(&call)?)?;
            touched.insert(call.invocation_id.clone());
            report.changed += 1;
        }
        for (key, (old, new)) in deltas {
            // Keys of the all-time tree carry a marker byte; see `scope_all`.
            let (tree, key) = match key.split_first() {
                Some((0xff, scope)) => (&self.rollup_all, scope.to_vec()),
                _ => (&self.rollup, key),
            };
            let mut cell = tree
                .get(&key)?
                .map(|v| RollupCell::decode(&v))
                .unwrap_or_default();
            cell.cost_pusd = (cell.cost_pusd + new).saturating_sub(old);
            tree.insert(key, cell.encode())?;
        }
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
        let (prompt, properties) = match self.inv_sum.get(id.as_bytes())? {
            Some(stored) => match summary::split_stored(&stored) {
                Some((_, json)) => {
                    let old: InvocationSummary = decode(id.as_bytes(), json)?;
                    (old.prompt, old.properties)
                }
                None => (None, BTreeMap::new()),
            },
            None => (None, BTreeMap::new()),
        };
        let summary = InvocationSummary::from_record(&inv, prompt, properties);
        self.inv_sum.insert(
            id.as_bytes(),
            summary::encode_stored(&summary.facets(), &summary).map_err(StoreError::Encode)?,
        )?;
        self.invocations
            .insert(id.as_bytes(), super::encode_invocation(&inv)?)?;
        Ok(())
    }
}

/// A delta-map key for the all-time rollup of `scope` (bucket keys never start with 0xff).
fn scope_all(scope: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(scope.len() + 1);
    key.push(0xff);
    key.extend_from_slice(scope);
    key
}
