//! Any group's committed offsets through one client (librdkafka's admin request
//! `ListConsumerGroupOffsets`, which rdkafka 0.39 does not wrap).
//!
//! rdkafka's `committed_offsets` reads the commits of the client's own `group.id` only, so the
//! backend used to make a consumer client per group it was asked about: a daemon with 16 routes
//! ran 16 such clients, each with its own threads and connections, next to the 16 members that
//! do the work. The admin request names the group, so one client serves all.
//!
//! That client must be a consumer with a `group.id` of its own (which it never joins), not an
//! admin client: librdkafka 2.12, given `NOT_COORDINATOR` for this request, asks the client's
//! own group to find its coordinator again, and dereferences a null group on a client without
//! one (confluentinc/librdkafka#5040, open; `tests/faults.rs` provokes it).

use std::ffi::{CStr, CString, c_char, c_int};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafkaErrorCode;
use tributary::{Error, Result};

use crate::error::by_code;

/// How long past the request's own timeout its answer is waited for.
const MARGIN_MS: c_int = 500;

/// Frees what librdkafka allocated, whichever way the function returns.
struct Owned<T> {
    ptr: *mut T,
    free: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the librdkafka constructor `free` belongs to, and is
            // freed once, here.
            unsafe { (self.free)(self.ptr) }
        }
    }
}

/// A C string librdkafka returned, as text.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string that lives for the call.
unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// The error for a failed request, of the kind its code says (rdkafka gives admin errors no
/// code, so `map` would make every one `Other`: a coordinator that moved is `Unavailable` and
/// worth asking again).
fn failure(code: rd::rd_kafka_resp_err_t, detail: &str, what: &str) -> Error {
    let code = RDKafkaErrorCode::from(code);
    let message = if detail.is_empty() {
        format!("{what}: {code}")
    } else {
        format!("{what}: {detail}")
    };
    by_code(code, &message)
}

/// `group`'s committed offset on partitions `0..partitions` of `topic`, in partition order
/// (`None` where it has none), asked through `client`, which must be a consumer with a group of
/// its own (see the module's doc). Blocks for up to `timeout` and half a second more: call it off
/// the async runtime.
pub(crate) fn committed<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<Option<u64>>> {
    let what = format!("read group `{group}`'s commits on `{topic}`");
    let c_group = CString::new(group)
        .map_err(|_| Error::config(format!("group `{group}` contains a NUL character")))?;
    let mut wanted = rdkafka::TopicPartitionList::with_capacity(partitions.max(0) as usize);
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let rk = client.native_ptr();
    let timeout_ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: every pointer below is either checked for null before use or handed straight
    // back to librdkafka; what librdkafka allocates is freed by `Owned` (the request and the
    // options are copied by `rd_kafka_ListConsumerGroupOffsets`, so they may go right after
    // it), and the result's strings and lists are read before its event is destroyed.
    unsafe {
        let queue = Owned {
            ptr: rd::rd_kafka_queue_new(rk),
            free: rd::rd_kafka_queue_destroy,
        };
        let options = Owned {
            ptr: rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
            ),
            free: rd::rd_kafka_AdminOptions_destroy,
        };
        if queue.ptr.is_null() || options.ptr.is_null() {
            return Err(Error::other(format!(
                "{what}: librdkafka refused the request"
            )));
        }
        let mut errstr = [0 as c_char; 256];
        let code = rd::rd_kafka_AdminOptions_set_request_timeout(
            options.ptr,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(failure(code, &text(errstr.as_ptr()), &what));
        }
        let request = Owned {
            ptr: rd::rd_kafka_ListConsumerGroupOffsets_new(c_group.as_ptr(), wanted.ptr()),
            free: rd::rd_kafka_ListConsumerGroupOffsets_destroy,
        };
        let mut requests = [request.ptr];
        rd::rd_kafka_ListConsumerGroupOffsets(
            rk,
            requests.as_mut_ptr(),
            requests.len(),
            options.ptr,
            queue.ptr,
        );
        // The request times out by itself after `timeout` (librdkafka's own timer); the margin
        // lets that answer come, and keeps a lookup's bound close to what its caller asked.
        let wait_ms = timeout_ms.saturating_add(MARGIN_MS);
        let event = Owned {
            ptr: rd::rd_kafka_queue_poll(queue.ptr, wait_ms),
            free: rd::rd_kafka_event_destroy,
        };
        if event.ptr.is_null() {
            return Err(Error::timeout(format!(
                "{what}: no answer within {:?}",
                timeout + Duration::from_millis(MARGIN_MS as u64)
            ))
            .with_retryable(true));
        }
        let code = rd::rd_kafka_event_error(event.ptr);
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(failure(
                code,
                &text(rd::rd_kafka_event_error_string(event.ptr)),
                &what,
            ));
        }
        let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.ptr);
        if result.is_null() {
            return Err(Error::other(format!(
                "{what}: librdkafka gave another answer"
            )));
        }
        let mut count = 0usize;
        let groups = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        if groups.is_null() || count == 0 {
            return Err(Error::other(format!("{what}: the answer names no group")));
        }
        let group_result = *groups;
        let error = rd::rd_kafka_group_result_error(group_result);
        if !error.is_null() {
            return Err(failure(
                rd::rd_kafka_error_code(error),
                &text(rd::rd_kafka_error_string(error)),
                &what,
            ));
        }
        let list = rd::rd_kafka_group_result_partitions(group_result);
        let mut offsets = vec![None; partitions.max(0) as usize];
        if list.is_null() || (*list).elems.is_null() {
            return Ok(offsets);
        }
        let elems = std::slice::from_raw_parts((*list).elems, (*list).cnt.max(0) as usize);
        for element in elems {
            if element.topic.is_null()
                || CStr::from_ptr(element.topic).to_bytes() != topic.as_bytes()
            {
                continue;
            }
            if element.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(failure(
                    element.err,
                    &format!("partition {}", element.partition),
                    &what,
                ));
            }
            // No commit reads as a negative offset (librdkafka's OFFSET_INVALID).
            if let (Ok(index), Ok(offset)) = (
                usize::try_from(element.partition),
                u64::try_from(element.offset),
            ) && let Some(slot) = offsets.get_mut(index)
            {
                *slot = Some(offset);
            }
        }
        Ok(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_name_with_a_nul_is_refused_by_name_before_any_request() {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:9")
                .create()
                .expect("admin client");
        let error = committed(admin.inner(), "a\0b", "t", 1, Duration::from_millis(10))
            .expect_err("refused");
        assert_eq!(error.kind(), tributary::ErrorKind::Config);
        assert!(error.message().contains("NUL"), "{error}");
    }
}
