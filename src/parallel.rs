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
    match chunk_len(items.len()) {
        None => items.iter().map(f).collect(),
        Some(n) => on_threads(items.chunks(n), |c| c.iter().map(&f).collect::<Vec<R>>())
            .into_iter()
            .flatten()
            .collect(),
    }
}

/// [`map`] over chunks: `f` gets a contiguous slice and returns its results.
pub fn map_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    match chunk_len(items.len()) {
        None => vec![f(items)],
        Some(n) => on_threads(items.chunks(n), f),
    }
}

/// `out[i] = f(&items[i])` for every `i`, on one thread per core for large inputs,
/// into memory the caller allocated.
pub fn fill<T: Sync, R: Send>(out: &mut [R], items: &[T], f: impl Fn(&T) -> R + Sync) {
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
pub fn map_chunks_mut<T: Send, R: Send>(items: &mut [T], f: impl Fn(&mut [T]) -> R + Sync) -> Vec<R> {
    match chunk_len(items.len()) {
        None => vec![f(items)],
        Some(n) => on_threads(items.chunks_mut(n), f),
    }
}

/// The length of each thread's chunk of `len` items, or `None` to stay on this thread.
fn chunk_len(len: usize) -> Option<usize> {
    let threads = threads();
    (threads >= 2 && len >= MIN_PARALLEL).then(|| len.div_ceil(threads))
}

/// `f` of each chunk, each on its own scoped thread, results in chunk order.
fn on_threads<C: Send, R: Send>(chunks: impl Iterator<Item = C>, f: impl Fn(C) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> = chunks.map(|c| s.spawn(move || f(c))).collect();
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
