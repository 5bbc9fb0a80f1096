//! Argon2id password hashing (OWASP's minimum: 19 MiB, t=2, p=1), PHC strings.
//!
//! Hashing runs on a few dedicated threads (one fewer than the cores, at least one), never on
//! the async workers, at a lower scheduling priority, and each thread reuses one Argon2 memory
//! buffer. So a login flood costs a bounded amount of memory (threads × 19 MiB) and leaves a
//! core for authenticated requests, where allocating 19 MiB per attempt on the general
//! blocking pool would grow the process without bound under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use rand::TryRngCore;
use subtle::ConstantTimeEq;

const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;
/// A stored hash asking for more memory than this is refused rather than computed.
const MAX_M_COST: u32 = 256 * 1024;

/// Runs Argon2 with `params` into `out`, growing `blocks` if the parameters need more memory.
fn compute(
    blocks: &mut Vec<Block>,
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> bool {
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
        .is_ok()
}

fn hash_with(blocks: &mut Vec<Block>, password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .expect("the operating system's random source failed");
    let params =
        Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).expect("valid Argon2 parameters");
    let mut out = [0u8; OUTPUT_LEN];
    let computed = compute(
        blocks,
        Algorithm::Argon2id,
        Version::V0x13,
        params,
        password.as_bytes(),
        &salt,
        &mut out,
    );
    assert!(
        computed,
        "Argon2 accepts any password under 4 GiB with a 16-byte salt"
    );
    format!(
        "$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    )
}

/// Checks `password` against a PHC string; anything unparsable never matches.
fn verify_with(blocks: &mut Vec<Block>, password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version {
        Some(v) => match Version::try_from(v) {
            Ok(version) => version,
            Err(_) => return false,
        },
        None => Version::V0x13,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    compute(
        blocks,
        algorithm,
        version,
        params,
        password.as_bytes(),
        salt,
        &mut out,
    ) && bool::from(expected.as_bytes().ct_eq(&out))
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashing is the one CPU-heavy thing the server does; at a lower scheduling priority it
/// still uses every idle cycle but yields to request handling, so a login flood does not
/// slow down authenticated requests. (Linux: `setpriority` on a thread id affects only it.)
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

fn hashing_threads() -> &'static Sender<Job> {
    static SENDER: OnceLock<Sender<Job>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (sender, receiver) = channel::<Job>();
        let receiver: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(receiver));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..cores.saturating_sub(1).max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    let mut blocks = Vec::new();
                    loop {
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A job that panics (a bug) must not take the thread with it:
                            // its caller gets no answer (a 500), everyone else goes on.
                            Ok(job) => {
                                let ran =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        job(&mut blocks)
                                    }));
                                if ran.is_err() {
                                    blocks = Vec::new();
                                }
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("a hashing thread can start");
        }
        sender
    })
}

async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> T {
    let (reply, answer) = rocket::tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |blocks| {
        let _ = reply.send(work(blocks));
    });
    hashing_threads()
        .send(job)
        .expect("hashing threads live as long as the process");
    answer
        .await
        .expect("a hashing job replies (unless it panicked: then this request fails alone)")
}

/// A hash of a password nobody knows, verified against when the email is unknown so that
/// unknown emails and wrong passwords take the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("latchkey-dummy-password-for-timing"))
}

/// The bound on password hashes waiting or running at once (`login_queue_max`). A request
/// that needs a hash takes a [`HashSlot`] first, before it does anything else; when the queue
/// is full it is refused at once ([`Overloaded`]), so a login flood cannot grow a queue whose
/// tail waits minutes, and the requests that need no hash never wait behind it.
#[derive(Clone)]
pub struct HashQueue {
    in_flight: Arc<AtomicUsize>,
    max: usize,
}

/// The hashing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// A place in the hashing queue (for one request's hashes, one after the other), given back
/// when dropped.
pub struct HashSlot {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashQueue {
    /// A queue for at most `max` hashes at once (at least one).
    pub fn new(max: usize) -> HashQueue {
        HashQueue {
            in_flight: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
        }
    }

    /// A place in the queue, or [`Overloaded`] at once.
    pub fn admit(&self) -> Result<HashSlot, Overloaded> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(HashSlot {
                in_flight: self.in_flight.clone(),
            }),
            Err(_) => Err(Overloaded),
        }
    }

    /// Hashes waiting or running right now.
    pub fn len(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether no hash is waiting or running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HashSlot {
    /// Hashes `password` on the hashing threads.
    pub async fn hash(&self, password: String) -> String {
        on_hashing_thread(move |blocks| hash_with(blocks, &password)).await
    }

    /// Verifies against `phc`, or against the dummy hash when there is no account (always
    /// false, in the same time).
    pub async fn verify(&self, password: String, phc: Option<String>) -> bool {
        on_hashing_thread(move |blocks| match phc {
            Some(phc) => verify_with(blocks, &password, &phc),
            None => {
                verify_with(blocks, &password, dummy_hash());
                false
            }
        })
        .await
    }
}

/// Hashes on the calling thread (tools and tests; the server uses [`HashSlot::hash`]).
pub fn hash_blocking(password: &str) -> String {
    hash_with(&mut Vec::new(), password)
}

/// Verifies on the calling thread (tools and tests; the server uses [`HashSlot::verify`]).
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    verify_with(&mut Vec::new(), password, phc)
}

/// Computes the dummy hash and starts the hashing threads before the first login.
pub fn warm_up() {
    dummy_hash();
    hashing_threads();
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    #[test]
    fn hash_and_verify() {
        let phc = hash_blocking("correct horse");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("correct horse", &phc));
        assert!(!verify_blocking("wrong horse", &phc));
        assert!(!verify_blocking("correct horse", "not a hash"));
        // Our PHC strings are standard: the reference implementation's parser accepts them.
        assert!(PasswordHash::new(&phc).is_ok());
    }

    #[test]
    fn verifies_hashes_made_elsewhere() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        for (algorithm, params) in [
            (
                Algorithm::Argon2id,
                Params::new(8 * 1024, 1, 1, None).unwrap(),
            ),
            (
                Algorithm::Argon2i,
                Params::new(16 * 1024, 3, 2, None).unwrap(),
            ),
        ] {
            let phc = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"pa55word", &salt)
                .unwrap()
                .to_string();
            assert!(verify_blocking("pa55word", &phc), "{phc}");
            assert!(!verify_blocking("pa55wore", &phc), "{phc}");
        }
    }

    #[test]
    fn async_pool_round_trip() {
        let rt = rocket::tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let queue = HashQueue::new(8);
        let slot = || queue.admit().unwrap();
        rt.block_on(async {
            let phc = slot().hash("pool password".into()).await;
            assert!(
                slot()
                    .verify("pool password".into(), Some(phc.clone()))
                    .await
            );
            assert!(!slot().verify("other".into(), Some(phc)).await);
            assert!(!slot().verify("pool password".into(), None).await);
        });
        assert!(queue.is_empty());
    }

    #[test]
    fn the_queue_refuses_beyond_its_bound() {
        let queue = HashQueue::new(2);
        let first = queue.admit().unwrap();
        let second = queue.admit().unwrap();
        assert_eq!(queue.admit().err(), Some(Overloaded));
        drop(first);
        let third = queue.admit().unwrap();
        assert_eq!(queue.len(), 2);
        drop((second, third));
        assert!(queue.is_empty());
    }
}
