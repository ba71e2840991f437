//! `poll_oneoff` for the sandbox. wasmtime-wasi implements a WASI sleep by blocking the host
//! thread, where epoch interruption cannot reach, so `time.sleep(3600)` would hold a sandbox
//! slot for an hour. This replacement knows the run's deadline: a wait that would outlast it is
//! cut at the deadline and ends the run as a timeout.
//!
//! It is complete for what the sandbox gives a guest: stdin is an in-memory pipe, stdout and
//! stderr are capture buffers and every other descriptor is a regular file, all of which are
//! always ready (as POSIX says of regular files). So a poll naming any descriptor returns at
//! once with those descriptors ready, and a poll of clocks only sleeps until the earliest one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::Caller;
use wasmtime_wasi::HostMonotonicClock;

use crate::sandbox::{Guest, Stop, Stopped};

const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// The guest's monotonic clock: nanoseconds since the run's store was made, so an absolute
/// monotonic deadline the guest computes can be turned back into a wait here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunClock(pub(crate) Instant);

impl HostMonotonicClock for RunClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

struct Subscription {
    userdata: u64,
    kind: u8,
    /// For clocks: how long until it fires.
    wait: Duration,
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn parse(bytes: &[u8], clock: RunClock) -> Result<Vec<Subscription>, i32> {
    bytes
        .chunks_exact(SUBSCRIPTION_SIZE)
        .map(|sub| {
            let userdata = le_u64(sub, 0);
            let kind = sub[8];
            let wait = match kind {
                EVENTTYPE_CLOCK => {
                    let id = u32::from_le_bytes([sub[16], sub[17], sub[18], sub[19]]);
                    let timeout = le_u64(sub, 24);
                    let flags = u16::from_le_bytes([sub[40], sub[41]]);
                    if flags & SUBSCRIPTION_CLOCK_ABSTIME == 0 {
                        timeout
                    } else if id == CLOCK_REALTIME {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                        timeout.saturating_sub(now)
                    } else {
                        timeout.saturating_sub(clock.now())
                    }
                }
                EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => 0,
                _ => return Err(ERRNO_INVAL),
            };
            Ok(Subscription {
                userdata,
                kind,
                wait: Duration::from_nanos(wait),
            })
        })
        .collect()
}

pub(crate) fn poll_oneoff(
    mut caller: Caller<'_, Guest>,
    subscriptions: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller
        .get_export("memory")
        .and_then(wasmtime::Extern::into_memory)
    else {
        return Ok(ERRNO_FAULT);
    };
    let count = count as u32 as usize;
    if count == 0 {
        return Ok(ERRNO_INVAL);
    }
    let (subs_at, events_at, nevents_at) = (
        subscriptions as u32 as usize,
        events as u32 as usize,
        nevents as u32 as usize,
    );
    let clock = caller.data().clock;
    let subs = {
        let data = memory.data(&caller);
        let Some(bytes) = count
            .checked_mul(SUBSCRIPTION_SIZE)
            .and_then(|len| data.get(subs_at..subs_at.checked_add(len)?))
        else {
            return Ok(ERRNO_FAULT);
        };
        match parse(bytes, clock) {
            Ok(subs) => subs,
            Err(errno) => return Ok(errno),
        }
    };

    let descriptors: Vec<&Subscription> =
        subs.iter().filter(|s| s.kind != EVENTTYPE_CLOCK).collect();
    let fired: Vec<&Subscription> = if descriptors.is_empty() {
        let shortest = subs.iter().map(|s| s.wait).min().unwrap_or_default();
        let remaining = caller
            .data()
            .deadline
            .saturating_duration_since(Instant::now());
        if shortest >= remaining {
            std::thread::sleep(remaining);
            caller.data_mut().stop = Some(Stop::Timeout);
            return Err(Stopped.into());
        }
        std::thread::sleep(shortest);
        subs.iter().filter(|s| s.wait <= shortest).collect()
    } else {
        descriptors
    };

    let data = memory.data_mut(&mut caller);
    let Some(out) = fired
        .len()
        .checked_mul(EVENT_SIZE)
        .and_then(|len| data.get_mut(events_at..events_at.checked_add(len)?))
    else {
        return Ok(ERRNO_FAULT);
    };
    for (event, sub) in out.chunks_exact_mut(EVENT_SIZE).zip(&fired) {
        event.fill(0);
        event[0..8].copy_from_slice(&sub.userdata.to_le_bytes());
        event[10] = sub.kind;
        if sub.kind != EVENTTYPE_CLOCK {
            // nbytes: "at least one byte" can be read or written without blocking.
            event[16..24].copy_from_slice(&1u64.to_le_bytes());
        }
    }
    let n = u32::try_from(fired.len()).unwrap_or(u32::MAX);
    let Some(slot) = data.get_mut(nevents_at..nevents_at.saturating_add(4)) else {
        return Ok(ERRNO_FAULT);
    };
    slot.copy_from_slice(&n.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_sub(userdata: u64, id: u32, timeout: u64, flags: u16) -> [u8; SUBSCRIPTION_SIZE] {
        let mut s = [0u8; SUBSCRIPTION_SIZE];
        s[0..8].copy_from_slice(&userdata.to_le_bytes());
        s[8] = EVENTTYPE_CLOCK;
        s[16..20].copy_from_slice(&id.to_le_bytes());
        s[24..32].copy_from_slice(&timeout.to_le_bytes());
        s[40..42].copy_from_slice(&flags.to_le_bytes());
        s
    }

    #[test]
    fn relative_and_absolute_clock_waits_become_durations() {
        let clock = RunClock(Instant::now());
        let mut bytes = Vec::new();
        bytes.extend(clock_sub(7, 1, 5_000_000, 0));
        // An absolute monotonic deadline already in the past waits for nothing.
        bytes.extend(clock_sub(8, 1, 0, SUBSCRIPTION_CLOCK_ABSTIME));
        let subs = parse(&bytes, clock).unwrap();
        assert_eq!(subs[0].userdata, 7);
        assert_eq!(subs[0].wait, Duration::from_millis(5));
        assert_eq!(subs[1].wait, Duration::ZERO);
    }

    #[test]
    fn unknown_event_types_are_invalid() {
        let mut sub = clock_sub(1, 1, 0, 0);
        sub[8] = 9;
        assert_eq!(
            parse(&sub, RunClock(Instant::now())).err(),
            Some(ERRNO_INVAL)
        );
    }
}
