//! Data parallelism without a thread pool: split a slice into contiguous chunks, map
//! them on one scoped thread per core, join in order. Results never depend on
//! scheduling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Below this many items, starting threads costs more than it saves.
const MIN_PARALLEL: usize = 2048;

/// Chunks per thread. With one chunk per thread, a thread whose keys were cheaper (or
/// that the machine scheduled more) sat idle while the other finished; with several,
/// each thread takes the next chunk when it is done with one.
const CHUNKS_PER_THREAD: usize = 8;

/// The number of threads to use.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `items.iter().map(f).collect()`, on one thread per core for large inputs.
pub(crate) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    match chunk_len(items.len()) {
        None => items.iter().map(f).collect(),
        Some(n) => on_threads(items.chunks(n), |c| c.iter().map(&f).collect::<Vec<R>>())
            .into_iter()
            .flatten()
            .collect(),
    }
}

/// [`map`] over chunks: `f` gets a contiguous slice and returns its results.
pub(crate) fn map_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    match chunk_len(items.len()) {
        None => vec![f(items)],
        Some(n) => on_threads(items.chunks(n), f),
    }
}

/// `out[i] = f(&items[i])` for every `i`, on one thread per core for large inputs,
/// into memory the caller allocated.
pub(crate) fn fill<T: Sync, R: Send>(out: &mut [R], items: &[T], f: impl Fn(&T) -> R + Sync) {
    assert_eq!(out.len(), items.len());
    match chunk_len(items.len()) {
        None => out.iter_mut().zip(items).for_each(|(o, i)| *o = f(i)),
        Some(n) => {
            on_threads(out.chunks_mut(n).zip(items.chunks(n)), |(o, i)| {
                o.iter_mut().zip(i).for_each(|(o, i)| *o = f(i))
            });
        }
    }
}

/// [`map_chunks`] over mutable chunks.
pub(crate) fn map_chunks_mut<T: Send, R: Send>(items: &mut [T], f: impl Fn(&mut [T]) -> R + Sync) -> Vec<R> {
    match chunk_len(items.len()) {
        None => vec![f(items)],
        Some(n) => on_threads(items.chunks_mut(n), f),
    }
}

/// `items.iter().map(f).collect()` on `workers` threads, each taking the next item
/// not yet taken: for work that waits (a service call) rather than computes, where
/// more threads than cores is the point. Results in item order.
pub(crate) fn map_workers<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if workers <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    on_n_threads(workers, items.iter(), f)
}

/// The length of each chunk of `len` items, or `None` to stay on this thread.
fn chunk_len(len: usize) -> Option<usize> {
    let threads = threads();
    (threads >= 2 && len >= MIN_PARALLEL).then(|| len.div_ceil(threads * CHUNKS_PER_THREAD))
}

/// `f` of each chunk on one scoped thread per core, each thread taking the next chunk
/// not yet taken; results in chunk order.
fn on_threads<C: Send, R: Send>(chunks: impl Iterator<Item = C>, f: impl Fn(C) -> R + Sync) -> Vec<R> {
    on_n_threads(threads(), chunks, f)
}

/// [`on_threads`] on `n` threads.
fn on_n_threads<C: Send, R: Send>(
    n: usize,
    chunks: impl Iterator<Item = C>,
    f: impl Fn(C) -> R + Sync,
) -> Vec<R> {
    let queue: Vec<Mutex<Option<C>>> = chunks.map(|c| Mutex::new(Some(c))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = queue.get(i) else {
                return done;
            };
            let chunk = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            done.extend(chunk.map(|c| (i, f(c))));
        }
    };
    let work = &work;
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..n.min(queue.len())).map(|_| s.spawn(work)).collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_input_order() {
        let items: Vec<u32> = (0..10_000).collect();
        assert_eq!(
            super::map(&items, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        let sums = super::map_chunks(&items, |c| c.iter().map(|x| u64::from(*x)).sum::<u64>());
        assert_eq!(sums.iter().sum::<u64>(), (0..10_000u64).sum::<u64>());
    }

    /// However unevenly the work falls, every chunk is mapped exactly once and the
    /// chunks come back in order.
    #[test]
    fn uneven_chunks_are_each_mapped_once_in_order() {
        let items: Vec<u64> = (0..50_000).collect();
        let chunks = super::map_chunks(&items, |c| {
            // The first chunks cost far more than the rest.
            let spin = if c[0] < 5_000 { 20_000 } else { 1 };
            let busy = (0..spin).fold(0u64, |a, i| a.wrapping_mul(31).wrapping_add(i));
            std::hint::black_box(busy);
            (c[0], c[c.len() - 1])
        });
        if super::threads() >= 2 {
            assert!(chunks.len() > super::threads(), "several chunks per thread");
        }
        let mut expected = 0;
        for (first, last) in chunks {
            assert_eq!(first, expected);
            expected = last + 1;
        }
        assert_eq!(expected, 50_000);
        let mut out = vec![0u64; items.len()];
        super::fill(&mut out, &items, |x| x + 1);
        assert!(out.iter().zip(&items).all(|(o, i)| *o == i + 1));
    }

    /// Waiting work overlaps on as many workers as asked, and keeps its order.
    #[test]
    fn workers_overlap_waits_and_keep_order() {
        let items: Vec<u64> = (0..40).collect();
        let in_flight = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        let out = super::map_workers(&items, 8, |x| {
            let now = in_flight.fetch_add(1, super::Ordering::SeqCst) + 1;
            most.fetch_max(now, super::Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            in_flight.fetch_sub(1, super::Ordering::SeqCst);
            x * 3
        });
        assert_eq!(out, items.iter().map(|x| x * 3).collect::<Vec<_>>());
        let most = most.load(super::Ordering::SeqCst);
        assert!(most > 1 && most <= 8, "{most} at once");
    }
}
