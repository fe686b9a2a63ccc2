//! Bounded, lock-free single-producer/single-consumer ring.
//!
//! Every agent thread owns the [`Producer`] of its own ring and the
//! dispatcher owns the matching [`Consumer`]: nothing on the sampling path
//! takes a lock or allocates. The layout follows `rtrb`: `head` (next slot to
//! read, written only by the consumer) and `tail` (next slot to write,
//! written only by the producer) live in separate cache-line-padded atomics,
//! and each side keeps a private copy of the other side's index that it
//! re-reads only when the ring looks full (producer) or empty (consumer).
//! Indices grow without bound and are reduced modulo the capacity, which
//! is a power of two.
//!
//! Overflow policy: a producer never blocks. [`Producer::push`] hands the
//! value back in [`PushError::Full`] and the caller counts it as dropped.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Pads and aligns a value to 128 bytes so that the producer's and the
/// consumer's indices never share a cache line (adjacent-line prefetch on
/// x86_64 pairs 64-byte lines, hence 128).
#[repr(align(128))]
#[derive(Debug, Default)]
struct CachePadded<T>(T);

struct Shared<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a slot is accessed by exactly one side at a time: the producer
// writes slots in [tail, head + capacity) and publishes them with a Release
// store of `tail`; the consumer reads slots in [head, tail) after an Acquire
// load of `tail` and hands them back with a Release store of `head`. `T`
// values move between threads, so `T: Send` is required.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: see above; the shared state only moves `T`s between threads.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for i in head..tail {
            // SAFETY: slots in [head, tail) hold initialised values that were
            // pushed and never popped; we have exclusive access in drop.
            unsafe { (*self.slots[i & self.mask].get()).assume_init_drop() };
        }
    }
}

/// The writing end of a ring; owned by exactly one thread.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    cached_head: usize,
}

/// The reading end of a ring; owned by exactly one thread.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    cached_tail: usize,
}

/// Why a push did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The ring is full; the value is handed back.
    Full(T),
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &(self.shared.mask + 1))
            .finish()
    }
}

/// Creates a ring holding at least `capacity` values (rounded up to a power
/// of two, minimum 2).
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        mask: cap - 1,
        slots,
    });
    (
        Producer {
            shared: Arc::clone(&shared),
            tail: 0,
            cached_head: 0,
        },
        Consumer {
            shared,
            head: 0,
            cached_tail: 0,
        },
    )
}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back when the ring is full. Never blocks.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        let cap = self.shared.mask + 1;
        if self.tail.wrapping_sub(self.cached_head) >= cap {
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) >= cap {
                return Err(PushError::Full(value));
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: the slot at `tail` is outside [head, tail), so the consumer
        // does not touch it until we publish the new tail below.
        unsafe { (*slot.get()).write(value) };
        self.tail = self.tail.wrapping_add(1);
        self.shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Number of values currently queued (may be stale by the time it is read).
    pub fn len(&self) -> usize {
        self.tail
            .wrapping_sub(self.shared.head.0.load(Ordering::Relaxed))
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }
}

impl<T> Consumer<T> {
    /// Removes the oldest value, if any. Never blocks.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: the slot at `head` lies in [head, tail): the producer wrote
        // it before its Release store of `tail`, which our Acquire load saw.
        let value = unsafe { (*slot.get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.shared.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Number of values currently queued.
    pub fn len(&self) -> usize {
        self.shared
            .tail
            .0
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_in_order_and_full_hands_value_back() {
        let (mut p, mut c) = channel::<u32>(3);
        assert_eq!(p.capacity(), 4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(99), Err(PushError::Full(99)));
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert!(c.is_empty());
    }

    #[test]
    fn drops_unpopped_values() {
        let marker = Arc::new(());
        {
            let (mut p, mut c) = channel(8);
            for _ in 0..5 {
                p.push(Arc::clone(&marker)).unwrap();
            }
            drop(c.pop());
            assert_eq!(Arc::strong_count(&marker), 5);
        }
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn two_threads_transfer_everything_in_order() {
        let n: u64 = if cfg!(miri) { 500 } else { 200_000 };
        let (mut p, mut c) = channel::<u64>(64);
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                if p.push(i).is_ok() {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0;
        while expect < n {
            if let Some(v) = c.pop() {
                assert_eq!(v, expect);
                expect += 1;
            }
        }
        t.join().unwrap();
        assert!(c.pop().is_none());
    }
}
