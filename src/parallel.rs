//! Data parallelism without a thread pool: split a slice into one contiguous chunk per
//! core, map each on a scoped thread, join in order. Results never depend on scheduling.

/// Below this many items, starting threads costs more than it saves.
const MIN_PARALLEL: usize = 2048;

/// The number of threads to use.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `items.iter().map(f).collect()`, on one thread per core for large inputs.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads();
    if threads < 2 || items.len() < MIN_PARALLEL {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// [`map`] over chunks: `f` gets a contiguous slice and returns its results.
pub fn map_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = threads();
    if threads < 2 || items.len() < MIN_PARALLEL {
        return vec![f(items)];
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> = items.chunks(chunk).map(|c| s.spawn(move || f(c))).collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// `out[i] = f(&items[i])` for every `i`, on one thread per core for large inputs.
/// The caller allocates `out`: threads allocate nothing (memory a worker thread frees
/// goes back to its own allocator arena, which a later phase may never reuse).
pub fn fill<T: Sync, R: Send>(out: &mut [R], items: &[T], f: impl Fn(&T) -> R + Sync) {
    assert_eq!(out.len(), items.len());
    let threads = threads();
    if threads < 2 || items.len() < MIN_PARALLEL {
        out.iter_mut().zip(items).for_each(|(o, i)| *o = f(i));
        return;
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for (o, i) in out.chunks_mut(chunk).zip(items.chunks(chunk)) {
            s.spawn(move || o.iter_mut().zip(i).for_each(|(o, i)| *o = f(i)));
        }
    });
}

/// [`map_chunks`] over mutable chunks.
pub fn map_chunks_mut<T: Send, R: Send>(items: &mut [T], f: impl Fn(&mut [T]) -> R + Sync) -> Vec<R> {
    let threads = threads();
    if threads < 2 || items.len() < MIN_PARALLEL {
        return vec![f(items)];
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> = items.chunks_mut(chunk).map(|c| s.spawn(move || f(c))).collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
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
}
