//! Starts N threads (argv[1]), joins them, exits 0: a process with threads and no children.
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4);
    let handles: Vec<_> = (0..n).map(|i| std::thread::spawn(move || i * 2)).collect();
    let sum: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    std::process::exit(if sum == n * (n.saturating_sub(1)) {
        0
    } else {
        1
    });
}
