//! TensorBoard event files: scalars, text and hparams, written without any TensorBoard crate.
//!
//! Why our own: tensorboard-rs's text and hparams writers are not implemented (they panic), two of
//! its writers in one folder overwrite each other's file, and it pulls protobuf 2
//! (RUSTSEC-2024-0437). The format is small: TFRecord framing around hand-encoded `Event`
//! protobufs. Scalar and text events are byte for byte what `torch.utils.tensorboard` writes
//! (wall time aside); hparams differ only where noted on [`EventWriter::hparams`].
//!
//! Field numbers come from TensorBoard's own protos (`tensorboard/compat/proto/event.proto`,
//! `summary.proto`, `tensor.proto`, `tensor_shape.proto`, `plugins/hparams/api.proto`,
//! `plugins/hparams/plugin_data.proto`, `google/protobuf/struct.proto`), checked against the
//! descriptors of tensorboard 2.21.0; `tests/tensorboard.rs` reads our files back with
//! TensorBoard's own reader.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use self::protobuf::Message;

/// One hyperparameter value, as the HParams dashboard types it (float64, string or bool).
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// Appends events to one new file in a run folder.
///
/// Durability: every logging call hands its records to the OS before returning, so a killed
/// process loses nothing already logged; [`EventWriter::flush`] also fsyncs, for machine
/// crashes. Each record is built whole and written with one `write_all`.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

/// Distinguishes writers created by this process within the same second.
static NEXT_WRITER: AtomicU64 = AtomicU64::new(0);

impl EventWriter {
    /// Creates `dir` if needed and a new `events.out.tfevents.{secs}.{host}.{pid}.{n}` file in
    /// it (never an existing one: other writers in the folder keep their files), starting
    /// with the `brain.Event:2` version record TensorBoard expects first.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "events.out.tfevents.{secs}.{}.{}.{}",
            hostname(),
            std::process::id(),
            NEXT_WRITER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        let mut event = event(0);
        event.string(3, "brain.Event:2");
        writer.write_record(event.encoded())?;
        writer.hand_to_os()?;
        Ok(writer)
    }

    /// The event file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scalar as `simple_value` (f32, as TensorBoard stores scalars) under `tag`.
    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        let mut summary_value = Message::new();
        summary_value.string(1, tag).float(2, value as f32);
        self.write_summary(step, &[summary_value])?;
        self.hand_to_os()
    }

    /// Text (markdown) for the Text dashboard, shown under `{tag}/text_summary` as
    /// `torch.utils.tensorboard` and `tensorboard.summary.v1` name it.
    pub fn text(&mut self, tag: &str, text: &str, step: i64) -> Result<()> {
        let mut shape = Message::new();
        shape.message(2, Message::new().varint(1, 1)); // dim { size: 1 }
        let mut tensor = Message::new();
        tensor
            .varint(1, DT_STRING)
            .message(2, &shape)
            .bytes(8, text.as_bytes());
        let mut summary_value = Message::new();
        summary_value
            .string(1, &format!("{tag}/text_summary"))
            .message(8, &tensor)
            // TextPluginData { version: 0 } serializes to nothing, so `content` is left out.
            .message(9, &plugin_metadata("text", &Message::new()));
        self.write_summary(step, &[summary_value])?;
        self.hand_to_os()
    }

    /// The run's hyperparameters and the scalar tags the HParams dashboard shows next to them.
    ///
    /// Writes the three summaries `torch.utils.tensorboard`'s `add_hparams` writes
    /// (`_hparams_/experiment`, `session_start_info`, and `session_end_info` with
    /// STATUS_SUCCESS), each with the empty float tensor TensorBoard's own hparams writer
    /// attaches. Unlike torch, bools are typed as bools, and the start time is recorded.
    /// Log the metric tags with [`EventWriter::scalar`] in the same folder.
    pub fn hparams(&mut self, params: &[(String, HParamValue)], metrics: &[&str]) -> Result<()> {
        let mut experiment = Message::new();
        for (name, value) in params {
            let data_type = match value {
                HParamValue::Text(_) => 1,   // DATA_TYPE_STRING
                HParamValue::Bool(_) => 2,   // DATA_TYPE_BOOL
                HParamValue::Number(_) => 3, // DATA_TYPE_FLOAT64
            };
            let mut info = Message::new();
            info.string(1, name).varint(4, data_type);
            experiment.message(4, &info); // hparam_infos
        }
        for tag in metrics {
            let mut info = Message::new();
            info.message(1, Message::new().string(2, tag)); // name: MetricName { tag }
            experiment.message(5, &info); // metric_infos
        }

        let mut start = Message::new();
        for (name, value) in params {
            // google.protobuf.Value: a oneof, so defaults (0, "", false) are still written.
            let mut proto_value = Message::new();
            match value {
                HParamValue::Number(x) => proto_value.double(2, *x),
                HParamValue::Text(s) => proto_value.string(3, s),
                HParamValue::Bool(b) => proto_value.varint(4, u64::from(*b)),
            };
            let mut entry = Message::new(); // map<string, Value> entry
            entry.string(1, name).message(2, &proto_value);
            start.message(1, &entry);
        }
        start.double(5, unix_time()); // start_time_secs

        let mut end = Message::new();
        end.varint(1, 1); // status: STATUS_SUCCESS

        // HParamsPluginData { version: 0 (left out), experiment = 2 | session_start_info = 3
        // | session_end_info = 4 }
        for (tag, field, data) in [
            ("_hparams_/experiment", 2, experiment),
            ("_hparams_/session_start_info", 3, start),
            ("_hparams_/session_end_info", 4, end),
        ] {
            let mut content = Message::new();
            content.message(field, &data);
            let mut null_tensor = Message::new(); // DT_FLOAT, shape [0]
            null_tensor
                .varint(1, DT_FLOAT)
                .message(2, Message::new().message(2, &Message::new()));
            let mut summary_value = Message::new();
            summary_value
                .string(1, tag)
                .message(8, &null_tensor)
                .message(9, &plugin_metadata("hparams", &content));
            self.write_summary(0, &[summary_value])?;
        }
        self.hand_to_os()
    }

    /// Marks a resumed run: TensorBoard drops the events of earlier files from `step` on (they
    /// are trained again), as for a SessionLog START written by TensorFlow.
    pub fn restart(&mut self, step: i64) -> Result<()> {
        let mut session_log = Message::new();
        session_log.varint(1, SESSION_START);
        let mut event = event(step);
        event.message(7, &session_log);
        self.write_record(event.encoded())?;
        self.hand_to_os()
    }

    /// Hands buffered records to the OS and fsyncs the file.
    pub fn flush(&mut self) -> Result<()> {
        self.hand_to_os()?;
        self.out
            .get_ref()
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }

    fn write_summary(&mut self, step: i64, values: &[Message]) -> Result<()> {
        let mut summary = Message::new();
        for value in values {
            summary.message(1, value);
        }
        let mut event = event(step);
        event.message(5, &summary);
        self.write_record(event.encoded())
    }

    /// TFRecord framing: length (u64 LE), its masked CRC32C, the data, the data's masked CRC32C.
    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(data);
        record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out
            .write_all(&record)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn hand_to_os(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// SessionLog.SessionStatus START (event.proto); Event.session_log is field 7.
const SESSION_START: u64 = 1;

/// tensorboard.DataType values (types.proto).
const DT_FLOAT: u64 = 1;
const DT_STRING: u64 = 7;

/// An Event with wall_time (1, double) and step (2, int64); the caller adds the payload.
fn event(step: i64) -> Message {
    let mut event = Message::new();
    event.double(1, unix_time());
    if step != 0 {
        event.int64(2, step);
    }
    event
}

/// SummaryMetadata { plugin_data (1): PluginData { plugin_name (1), content (2) } }.
fn plugin_metadata(plugin: &str, content: &Message) -> Message {
    let mut plugin_data = Message::new();
    plugin_data.string(1, plugin);
    if !content.encoded().is_empty() {
        plugin_data.bytes(2, content.encoded());
    }
    let mut metadata = Message::new();
    metadata.message(1, &plugin_data);
    metadata
}

fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name for file names (as TensorFlow puts it there), or "runner".
fn hostname() -> String {
    let name = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "runner".to_string()
    } else {
        name
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum TFRecord uses.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &byte| {
        CRC32C_TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8)
    })
}

/// TFRecord's masked CRC32C, so that CRCs of data holding CRCs stay well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The few protobuf encodings the messages above need; fields are written in the order called.
mod protobuf {
    /// An encoded message being built.
    #[derive(Default)]
    pub struct Message(Vec<u8>);

    impl Message {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn encoded(&self) -> &[u8] {
            &self.0
        }

        fn key(&mut self, field: u32, wire_type: u8) {
            self.raw_varint((u64::from(field) << 3) | u64::from(wire_type));
        }

        fn raw_varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.0.push((v as u8) | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }

        /// Wire type 0: uint64, bool, enum.
        pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
            self.key(field, 0);
            self.raw_varint(v);
            self
        }

        /// int64: two's complement as a varint (negative values take ten bytes).
        pub fn int64(&mut self, field: u32, v: i64) -> &mut Self {
            self.varint(field, v as u64)
        }

        /// Wire type 1.
        pub fn double(&mut self, field: u32, v: f64) -> &mut Self {
            self.key(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }

        /// Wire type 5.
        pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
            self.key(field, 5);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }

        /// Wire type 2: bytes, strings and embedded messages.
        pub fn bytes(&mut self, field: u32, data: &[u8]) -> &mut Self {
            self.key(field, 2);
            self.raw_varint(data.len() as u64);
            self.0.extend_from_slice(data);
            self
        }

        pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
            self.bytes(field, s.as_bytes())
        }

        pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
            self.bytes(field, &m.0)
        }
    }
}
