//! Model weights read from safetensors files one tensor at a time.
//!
//! candle's `MmapedSafetensors` maps the whole file: every page a tensor is
//! copied from stays in the process's resident memory for as long as the map
//! lives, so while a model loads it holds the file and its own copy of the
//! weights at once. With a ViT-B/16 Chinese-CLIP (750 MB of f32) that doubled
//! the peak. Here each tensor is read into a buffer of its own, made a tensor,
//! and the buffer freed: the peak is the model plus one tensor.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use serde::Deserialize;

/// Every tensor of one or more safetensors files (a model's shards), by name.
pub(crate) struct SafetensorsFiles {
    files: Vec<OpenFile>,
    tensors: HashMap<String, Stored>,
}

/// One file of a model's, as its header was read.
struct OpenFile {
    path: PathBuf,
    /// Its length then.
    len: u64,
    file: Mutex<File>,
}

/// The rows of one `(rows, width)` tensor of a safetensors file, read from
/// the file when asked for: a table of which a pass needs a few rows (the
/// text tower's 21,128 words, 65 MB in f32) need not be held in memory.
pub(crate) struct RowsInFile {
    path: PathBuf,
    file: Mutex<File>,
    start: u64,
    stored: DType,
    rows: usize,
    width: usize,
    /// The dtype rows are given in.
    dtype: DType,
}

/// Where one tensor's bytes are.
struct Stored {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offset in the file, and length.
    start: u64,
    len: usize,
}

/// One entry of a safetensors header.
#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl SafetensorsFiles {
    /// Reads the headers of `paths`; the tensors are read when asked for.
    pub(crate) fn open(paths: &[PathBuf]) -> candle_core::Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let mut file = File::open(path)?;
            let file_len = file.metadata()?.len();
            let mut len_bytes = [0u8; 8];
            file.read_exact(&mut len_bytes)?;
            let header_len = u64::from_le_bytes(len_bytes);
            if header_len > 100 * 1024 * 1024 || 8 + header_len > file_len {
                return Err(bad(path, "its header length is impossible"));
            }
            let mut header = vec![0u8; header_len as usize];
            file.read_exact(&mut header)?;
            let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
                .map_err(|e| bad(path, &format!("its header is not JSON ({e})")))?;
            let data_start = 8 + header_len;
            for (name, entry) in header {
                if name == "__metadata__" {
                    continue;
                }
                let entry: HeaderEntry = serde_json::from_value(entry)
                    .map_err(|e| bad(path, &format!("tensor {name}: {e}")))?;
                let dtype: DType = entry.dtype.to_lowercase().parse().map_err(|_| {
                    bad(
                        path,
                        &format!("tensor {name}: unknown dtype {}", entry.dtype),
                    )
                })?;
                // Dtypes of less than a byte an element (f4, f6e2m3, f6e3m2)
                // have size 0 here: any shape would take no bytes.
                if dtype.size_in_bytes() == 0 {
                    return Err(bad(
                        path,
                        &format!("tensor {name}: dtype {} is not read here", entry.dtype),
                    ));
                }
                // Every count from the header is checked, not trusted to fit.
                let (begin, end) = entry.data_offsets;
                let bytes = entry
                    .shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .and_then(|elements| elements.checked_mul(dtype.size_in_bytes()));
                let ends_at = u64::try_from(end)
                    .ok()
                    .and_then(|end| data_start.checked_add(end));
                if end < begin
                    || bytes != Some(end - begin)
                    || ends_at.is_none_or(|ends_at| ends_at > file_len)
                {
                    return Err(bad(path, &format!("tensor {name}: its offsets do not fit")));
                }
                tensors.insert(
                    name,
                    Stored {
                        file: index,
                        dtype,
                        shape: entry.shape,
                        start: data_start + begin as u64,
                        len: end - begin,
                    },
                );
            }
            files.push(OpenFile {
                path: path.clone(),
                len: file_len,
                file: Mutex::new(file),
            });
        }
        Ok(Self { files, tensors })
    }

    /// Tensor `name`, `(rows, width)`, to be read a row at a time from its
    /// file, the rows given in `dtype`. The file is opened anew, so that its
    /// reads and [`SafetensorsFiles`]'s never share a file offset, and must
    /// still have the length its header was checked against.
    pub(crate) fn rows_in_file(
        &self,
        name: &str,
        (rows, width): (usize, usize),
        dtype: DType,
    ) -> candle_core::Result<RowsInFile> {
        let stored = self.stored_with_shape(name, &(rows, width).into())?;
        if width == 0 {
            candle_core::bail!("{name} is a table of rows of no width");
        }
        let OpenFile { path, len, .. } = &self.files[stored.file];
        let file = File::open(path)?;
        if file.metadata()?.len() != *len {
            candle_core::bail!("{} changed while the model loaded", path.display());
        }
        Ok(RowsInFile {
            path: path.clone(),
            file: Mutex::new(file),
            start: stored.start,
            stored: stored.dtype,
            rows,
            width,
            dtype,
        })
    }

    fn stored(&self, name: &str) -> candle_core::Result<&Stored> {
        self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_owned(),
            }
            .bt()
        })
    }

    /// Tensor `name`'s place, checked to have `shape` before anything is read.
    fn stored_with_shape(&self, name: &str, shape: &Shape) -> candle_core::Result<&Stored> {
        let stored = self.stored(name)?;
        if stored.shape != shape.dims() {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape.clone(),
                got: stored.shape.clone().into(),
            }
            .bt());
        }
        Ok(stored)
    }

    fn load(&self, stored: &Stored, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let mut bytes = vec![0u8; stored.len];
        {
            let mut file = self.files[stored.file]
                .file
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            file.seek(SeekFrom::Start(stored.start))?;
            file.read_exact(&mut bytes)?;
        }
        // On a GPU the conversion runs there.
        Tensor::from_raw_buffer(&bytes, stored.dtype, &stored.shape, &Device::Cpu)?
            .to_device(device)?
            .to_dtype(dtype)
    }
}

impl RowsInFile {
    /// Rows `ids`, `(ids.len(), width)`, on the CPU.
    pub(crate) fn get(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let row_bytes = self.width * self.stored.size_in_bytes();
        let mut bytes = vec![0u8; ids.len() * row_bytes];
        {
            let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            for (&id, row) in ids.iter().zip(bytes.chunks_exact_mut(row_bytes)) {
                if id as usize >= self.rows {
                    candle_core::bail!("row {id} of a table of {} rows", self.rows);
                }
                file.seek(SeekFrom::Start(self.start + id as u64 * row_bytes as u64))
                    .and_then(|_| file.read_exact(row))
                    .map_err(|e| {
                        candle_core::Error::Msg(format!(
                            "cannot read row {id} from {}: {e}",
                            self.path.display()
                        ))
                    })?;
            }
        }
        Tensor::from_raw_buffer(&bytes, self.stored, &[ids.len(), self.width], &Device::Cpu)?
            .to_dtype(self.dtype)
    }
}

fn bad(path: &Path, problem: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{} is not a safetensors file: {problem}",
        path.display()
    ))
}

impl SimpleBackend for SafetensorsFiles {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.load(self.stored_with_shape(name, &shape)?, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.load(self.stored(name)?, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_read_back_as_candle_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let b = Tensor::new(&[7u32, 8, 9], &dev).unwrap();
        let c = Tensor::new(&[1.5f32, -2.0], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let first = dir.path().join("a.safetensors");
        let second = dir.path().join("b.safetensors");
        candle_core::safetensors::save(
            &HashMap::from([("a", a.clone()), ("b", b.clone())]),
            &first,
        )
        .unwrap();
        candle_core::safetensors::save(&HashMap::from([("c", c.clone())]), &second).unwrap();

        let files = SafetensorsFiles::open(&[first, second]).unwrap();
        let got = files
            .get((3, 4).into(), "a", Init::Const(0.), DType::F32, &dev)
            .unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        let got = files.get_unchecked("b", DType::U32, &dev).unwrap();
        assert_eq!(got.to_vec1::<u32>().unwrap(), [7, 8, 9]);
        // Stored in bf16, asked for in f32: converted as it loads.
        let got = files.get_unchecked("c", DType::F32, &dev).unwrap();
        assert_eq!(got.to_vec1::<f32>().unwrap(), [1.5, -2.0]);
        assert!(files.contains_tensor("c") && !files.contains_tensor("d"));
        assert!(files
            .get((4, 3).into(), "a", Init::Const(0.), DType::F32, &dev)
            .is_err());
        assert!(files.get_unchecked("d", DType::F32, &dev).is_err());
    }

    /// Rows read from the file are the table's rows, in any order and
    /// repeated, converted from the stored dtype; a row past the table, a
    /// wrong shape or a missing name is an error.
    #[test]
    fn rows_in_file_are_the_tables_rows() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let table = Tensor::arange(0f32, 15., &dev)
            .unwrap()
            .reshape((5, 3))
            .unwrap();
        let path = dir.path().join("t.safetensors");
        let tensors = HashMap::from([
            ("other", Tensor::ones(7, DType::F32, &dev).unwrap()),
            ("table", table.to_dtype(DType::BF16).unwrap()),
        ]);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let files = SafetensorsFiles::open(&[path]).unwrap();
        let rows = files.rows_in_file("table", (5, 3), DType::F32).unwrap();
        let got = rows.get(&[4, 0, 4, 2]).unwrap();
        let want = table.index_select(&Tensor::new(&[4u32, 0, 4, 2], &dev).unwrap(), 0);
        assert_eq!(got.dtype(), DType::F32);
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.unwrap().to_vec2::<f32>().unwrap()
        );
        assert_eq!(rows.get(&[]).unwrap().dims(), &[0, 3]);
        assert!(rows.get(&[1, 5]).is_err());
        assert!(files.rows_in_file("table", (3, 5), DType::F32).is_err());
        assert!(files.rows_in_file("missing", (5, 3), DType::F32).is_err());
    }

    /// A file whose header is only this JSON, and `data` after it.
    fn file_with_header(dir: &Path, header: &serde_json::Value, data: &[u8]) -> PathBuf {
        let path = dir.join("h.safetensors");
        let header = header.to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Headers that lie: element counts and offsets that overflow, and a
    /// dtype of less than a byte an element (size 0, so any shape would take
    /// no bytes), are refused when the file opens; a table of rows of no
    /// width is refused before a row is read.
    #[test]
    fn counts_and_offsets_that_overflow_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let huge = 1usize << 40;
        let lies = [
            // 2⁴⁰ × 2⁴⁰ × 2⁴⁰ elements wrap to 0, as many as the bytes given.
            serde_json::json!({"t": {"dtype": "F32", "shape": [huge, huge, huge], "data_offsets": [0, 0]}}),
            // 2⁶² elements of 4 bytes wrap to 0.
            serde_json::json!({"t": {"dtype": "F32", "shape": [1usize << 62], "data_offsets": [0, 0]}}),
            // The data start plus an end near 2⁶⁴ wraps below the file's length.
            serde_json::json!({"t": {"dtype": "U8", "shape": [4], "data_offsets": [u64::MAX - 4, u64::MAX]}}),
            serde_json::json!({"t": {"dtype": "F4", "shape": [1000, 1000], "data_offsets": [0, 0]}}),
        ];
        for header in lies {
            let path = file_with_header(dir.path(), &header, &[0; 16]);
            let opened = std::panic::catch_unwind(|| SafetensorsFiles::open(&[path]));
            match opened {
                Ok(Err(e)) => assert!(
                    e.to_string().contains("do not fit") || e.to_string().contains("not read here"),
                    "{header}: {e}"
                ),
                Ok(Ok(_)) => panic!("{header} was taken"),
                Err(_) => panic!("{header} panicked"),
            }
        }
        let header =
            serde_json::json!({"t": {"dtype": "F32", "shape": [5, 0], "data_offsets": [0, 0]}});
        let files = SafetensorsFiles::open(&[file_with_header(dir.path(), &header, &[])]).unwrap();
        let table = files.rows_in_file("t", (5, 0), DType::F32);
        assert!(table.is_err());
    }

    #[test]
    fn a_damaged_file_is_refused_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("a", a)]), &path).unwrap();
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 4]).unwrap();
        let err = SafetensorsFiles::open(std::slice::from_ref(&path))
            .err()
            .unwrap();
        assert!(err.to_string().contains("do not fit"), "{err}");
        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        assert!(SafetensorsFiles::open(&[path]).is_err());
    }
}
