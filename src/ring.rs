//! Bounded single-producer/single-consumer rings between tal's threads:
//! `rtrb`'s lock-free ring, behind the small API tal uses.
//!
//! Every agent thread owns the [`Producer`] of its own ring and the
//! dispatcher owns the matching [`Consumer`] (the same for the listener's,
//! the fan-out's and the exporter's rings): nothing on the sampling path
//! takes a lock or allocates. Overflow policy: a producer never blocks.
//! [`Producer::push`] hands the value back in [`PushError::Full`] and the
//! caller counts it as dropped.
//!
//! Why `rtrb`: tal had its own ring, on `rtrb`'s layout (cache-padded head
//! and tail, each side caching the other's index), with 250 lines of
//! `unsafe`. Measured side by side (`cargo bench --bench rings`, 2-vCPU VM;
//! the hand-written ring is in the tree up to commit 9556d8f), it did not
//! win: one push and pop of a 1 KiB proc sample took 417.5 ns against
//! `rtrb`'s 412.9 ns (crossbeam's `ArrayQueue` 365.5 ns), of a GPU poll
//! 2.85 µs against 2.93 µs (`ArrayQueue` 4.02 µs), of a `u64` 3.14 ns
//! against 3.14 ns (`ArrayQueue` 8.39 ns); 100 000 `u64`s between two
//! spinning threads took 17.8–36.6 ms against 11.2–27.7 ms over three
//! runs (`ArrayQueue` 21.7–51.5 ms): noise on two shared cores, no winner.
//! A tie goes to the well-kept crate, which its authors test (loom
//! included) so that tal need not. (`ArrayQueue` is a multi-producer queue,
//! slower where tal's payloads are big or small.)

use std::fmt;

/// The writing end of a ring; owned by exactly one thread.
pub struct Producer<T>(rtrb::Producer<T>);

/// The reading end of a ring; owned by exactly one thread.
pub struct Consumer<T>(rtrb::Consumer<T>);

/// Why a push did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The ring is full; the value is handed back.
    Full(T),
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .finish()
    }
}

/// Creates a ring holding at least `capacity` values (rounded up to a power
/// of two, minimum 2, as tal's ring sizes were chosen).
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let (p, c) = rtrb::RingBuffer::new(capacity.max(2).next_power_of_two());
    (Producer(p), Consumer(c))
}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back when the ring is full. Never blocks.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        self.0
            .push(value)
            .map_err(|rtrb::PushError::Full(v)| PushError::Full(v))
    }

    /// Number of values currently queued (may be stale by the time it is read).
    pub fn len(&self) -> usize {
        self.capacity() - self.0.slots()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.0.buffer().capacity()
    }
}

impl<T> Consumer<T> {
    /// Removes the oldest value, if any. Never blocks.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        self.0.pop().ok()
    }

    /// Number of values currently queued.
    pub fn len(&self) -> usize {
        self.0.slots()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of values the ring holds.
    pub fn capacity(&self) -> usize {
        self.0.buffer().capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
