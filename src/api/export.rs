//! Streamed responses: CSV exports (RFC 4180, row by row, page by page) and the live
//! Server-Sent Events stream of new calls and runs, as the lists answer them.
//!
//! Both bodies are fed through a small bounded channel, so memory stays bounded by a
//! few chunks whatever the export size, and a client that goes away stops the producer.

use super::answers::{CallListItem, RunListItem};
use super::columns;
use super::params::{self, bad, Params};
use super::views::list_filter;
use super::{audit, ApiBody, ApiError, ApiResult, ApiState};
use crate::api::auth::Principal;
use crate::store::summary::Filter;
use crate::store::{PageRequest, Position, Store};
use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const CHUNK_BYTES: usize = 32 * 1024;
const EXPORT_PAGE: usize = 500;
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A response body fed by a channel; ends when the sender is dropped.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

fn streamed(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response<ApiBody> {
    let mut response = Response::new(ChannelBody { rx }.boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a leading tab
/// or carriage return that some strip before looking) gets a leading `'`, which
/// Excel, LibreOffice and Google Sheets show as text. Prompts and agent names are
/// untrusted text; numbers we write ourselves (a negative never occurs) pass as is.
pub fn neutralise_formula(value: &str) -> std::borrow::Cow<'_, str> {
    match value.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{value}").into(),
        _ => value.into(),
    }
}

type CsvOut = csv::Writer<Vec<u8>>;

/// An RFC 4180 writer (CRLF rows; the csv crate quotes what needs quoting) into memory.
fn csv_out() -> CsvOut {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(CHUNK_BYTES * 2))
}

/// Appends one row, formula cells neutralised.
fn csv_row(out: &mut CsvOut, fields: &[String]) {
    // Writing into a Vec cannot fail.
    let _ = out.write_record(
        fields
            .iter()
            .map(|f| neutralise_formula(f))
            .map(|c| c.as_bytes().to_vec()),
    );
}

/// The bytes written so far, taken out of the writer.
fn csv_take(out: &mut CsvOut) -> Vec<u8> {
    // Flushing into a Vec cannot fail.
    std::mem::replace(out, csv_out())
        .into_inner()
        .unwrap_or_default()
}

/// The last user message of a call, for admins (empty for viewers).
fn call_input(store: &Store, id: &str, admin: bool) -> String {
    if !admin {
        return String::new();
    }
    match store.call_text(id) {
        Ok(Some(t)) => t.last_user.unwrap_or_default(),
        _ => String::new(),
    }
}

/// Response header of a paged CSV answer: the `cursor` of the next page (absent on
/// the last page).
pub const NEXT_CURSOR_HEADER: &str = "x-llmtap-next-cursor";
/// Response header of a paged CSV answer's first page: how many rows match (a lower
/// bound past 10000, as a list's `total`).
pub const TOTAL_HEADER: &str = "x-llmtap-total";

/// `GET /api/v1/calls.csv` and `/invocations.csv`. Without `limit` or `cursor` every
/// matching row is streamed; with either, one page is answered whole, its next cursor
/// in `x-llmtap-next-cursor` (how `llmtap export` reads it, so the CLI's file has the
/// API's cells, `input` included, and can resume between pages).
pub(super) fn csv(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    invocations: bool,
    path: &str,
) -> ApiResult {
    let filter = list_filter(who, p)?;
    let paged = p.get("limit").is_some() || p.get("cursor").is_some();
    let request = if paged {
        Some(params::page_request(p, p.get("cursor").is_none())?)
    } else {
        None
    };
    let admin = who.is_admin();
    if admin {
        audit(state, who, "export with prompts", path)?;
    }
    let store = state.store.clone();
    if let Some(request) = request {
        return csv_page(&store, &filter, invocations, admin, &request);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = produce_csv(&store, &filter, invocations, admin, &tx) {
            tracing::warn!(error = %e, "CSV export stopped early");
        }
    });
    Ok(streamed(rx, "text/csv; charset=utf-8"))
}

fn csv_header(invocations: bool) -> Vec<String> {
    if invocations {
        columns::header(columns::INVOCATION)
    } else {
        columns::header(columns::CALL)
    }
}

/// Where a page of rows ended.
struct PageEnd {
    next: Option<Position>,
    total: u64,
}

/// Writes the rows of one page into `out`, calling `after_row` after each; `None` when
/// `after_row` asked to stop.
fn write_page(
    store: &Store,
    filter: &Filter,
    invocations: bool,
    admin: bool,
    request: &PageRequest,
    out: &mut CsvOut,
    after_row: &mut dyn FnMut(&mut CsvOut) -> bool,
) -> Result<Option<PageEnd>, ApiError> {
    if invocations {
        let page = store.list_invocations(filter, request)?;
        for s in page.items.into_iter().map(RunListItem::of) {
            let input = match (admin, store.invocation_call_ids(&s.run.id)) {
                (true, Ok(ids)) => ids
                    .first()
                    .map(|id| call_input(store, id, true))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            csv_row(out, &columns::row(columns::INVOCATION, &s, input));
            if !after_row(out) {
                return Ok(None);
            }
        }
        Ok(Some(PageEnd {
            next: page.next,
            total: page.total,
        }))
    } else {
        let page = store.list_calls(filter, request)?;
        for s in page.items.into_iter().map(CallListItem::of) {
            let input = call_input(store, &s.id, admin);
            csv_row(out, &columns::row(columns::CALL, &s, input));
            if !after_row(out) {
                return Ok(None);
            }
        }
        Ok(Some(PageEnd {
            next: page.next,
            total: page.total,
        }))
    }
}

/// One page, answered whole: the header row, the page's rows, and its next cursor.
fn csv_page(
    store: &Store,
    filter: &Filter,
    invocations: bool,
    admin: bool,
    request: &PageRequest,
) -> ApiResult {
    let mut buf = csv_out();
    csv_row(&mut buf, &csv_header(invocations));
    let end = write_page(
        store,
        filter,
        invocations,
        admin,
        request,
        &mut buf,
        &mut |_| true,
    )?
    .unwrap_or(PageEnd {
        next: None,
        total: 0,
    });
    let mut response = Response::new(super::full(Bytes::from(csv_take(&mut buf))));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Some(next) = end.next.as_ref().map(params::encode_cursor) {
        if let Ok(v) = HeaderValue::from_str(&next) {
            headers.insert(NEXT_CURSOR_HEADER, v);
        }
    }
    if request.count_total {
        headers.insert(TOTAL_HEADER, HeaderValue::from(end.total));
    }
    Ok(response)
}

fn produce_csv(
    store: &Store,
    filter: &Filter,
    invocations: bool,
    admin: bool,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), ApiError> {
    let mut buf = csv_out();
    csv_row(&mut buf, &csv_header(invocations));
    let mut request = PageRequest {
        limit: EXPORT_PAGE,
        after: None,
        offset: 0,
        count_total: false,
    };
    let flush = |buf: &mut CsvOut| -> bool {
        let chunk = Bytes::from(csv_take(buf));
        tx.blocking_send(chunk).is_ok()
    };
    let mut flush_when_full = |buf: &mut CsvOut| buf.get_ref().len() < CHUNK_BYTES || flush(buf);
    loop {
        match write_page(
            store,
            filter,
            invocations,
            admin,
            &request,
            &mut buf,
            &mut flush_when_full,
        )? {
            // The client went away.
            None => return Ok(()),
            Some(PageEnd { next: Some(p), .. }) => request.after = Some(p),
            Some(PageEnd { next: None, .. }) => break,
        }
    }
    flush(&mut buf);
    Ok(())
}

/// `GET /stream`: `event: call` and `event: invocation` with summary JSON, filtered.
pub(super) fn stream(state: &Arc<ApiState>, who: &Principal, p: &Params) -> ApiResult {
    let filter = list_filter(who, p)?;
    if filter.text.is_some() {
        return Err(bad("q", "text search is not available on the live stream").into());
    }
    let (calls, invocations) = match p.get("type").unwrap_or("all") {
        "all" => (true, true),
        "calls" => (true, false),
        "invocations" => (false, true),
        _ => return Err(bad("type", "expected calls, invocations or all").into()),
    };
    // Subscribe before answering: everything stored after the response head is seen.
    let mut events = state.store.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if tx
            .send(Bytes::from_static(b": connected\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let out = tokio::select! {
                _ = tx.closed() => return,
                _ = keepalive.tick() => String::from(": keepalive\n\n"),
                got = events.recv() => match got {
                    Ok(batch) => {
                        let mut out = String::new();
                        if calls {
                            for c in batch.calls.iter().filter(|c| filter.matches_facets(&c.facets())) {
                                sse_event(&mut out, "call", &CallListItem::of(c.clone()));
                            }
                        }
                        if invocations {
                            for i in batch.invocations.iter().filter(|i| filter.matches_facets(&i.facets())) {
                                sse_event(&mut out, "invocation", &RunListItem::of(i.clone()));
                            }
                        }
                        out
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => format!(": lagged, {n} batches skipped\n\n"),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
        }
    });
    Ok(streamed(rx, "text/event-stream"))
}

/// One event; its data an answer type, as `ok` requires of a JSON answer.
fn sse_event<T: serde::Serialize + schemars::JsonSchema>(out: &mut String, name: &str, value: &T) {
    if let Ok(data) = serde_json::to_string(value) {
        out.push_str("event: ");
        out.push_str(name);
        out.push_str("\ndata: ");
        out.push_str(&data);
        out.push_str("\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_follows_rfc_4180() {
        let mut out = csv_out();
        csv_row(
            &mut out,
            &[
                "plain".into(),
                "a,b".into(),
                "say \"hi\"".into(),
                "two\nlines".into(),
                String::new(),
            ],
        );
        assert_eq!(
            String::from_utf8(csv_take(&mut out)).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn formula_cells_are_neutralised() {
        for cell in [
            "=HYPERLINK(\"http://evil\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert_eq!(neutralise_formula(cell), format!("'{cell}"));
        }
        for cell in ["plain", "12.5", "", "a=b"] {
            assert_eq!(neutralise_formula(cell), cell);
        }
    }
}
