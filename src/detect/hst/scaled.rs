//! [`ScaledHst`]: a scaler in front of the trees, and its checkpoint.

use super::*;

/// Rows per internal batch of [`ScaledHst::score_and_learn_batch`].
const PIPE_BATCH: usize = 64;

/// A scaler in front of Half-Space Trees, called as River's `compose.Pipeline` calls it
/// (hst.md §8): the score uses the scaler's statistics before the sample, then the scaler
/// learns the sample, then the trees learn the sample transformed with the updated statistics.
/// When learning did not change the scaler (the common case) both vectors are equal and one
/// fused walk per tree does both. This is the unit the sensor checkpoints.
#[derive(Debug, Clone)]
pub struct ScaledHst {
    scaler: crate::detect::scale::Scaler,
    hst: HalfSpaceTrees,
    /// Scratch rows: score-time vectors, learn-time vectors, and which rows differ.
    a: Vec<f64>,
    b: Vec<f64>,
    differs: Vec<bool>,
}

impl ScaledHst {
    pub fn new(
        scaler: crate::detect::scale::Scaler,
        hst: HalfSpaceTrees,
    ) -> Result<Self, HstError> {
        let d = hst.n_features();
        if let Some(sd) = scaler.n_features() {
            if sd != d {
                return Err(HstError::Dim {
                    expected: d,
                    got: sd,
                });
            }
        }
        Ok(ScaledHst {
            scaler,
            hst,
            a: vec![0.0; PIPE_BATCH * d],
            b: vec![0.0; PIPE_BATCH * d],
            differs: vec![false; PIPE_BATCH],
        })
    }
    pub fn hst(&self) -> &HalfSpaceTrees {
        &self.hst
    }
    pub fn scaler(&self) -> &crate::detect::scale::Scaler {
        &self.scaler
    }
    /// The scaled vector the last `score_one` / `score_and_learn` scored (the scaler's
    /// output before it learned that sample), e.g. for explanations; saves transforming twice.
    pub fn last_scaled(&self) -> &[f64] {
        &self.a[..self.hst.n_features()]
    }

    /// Both the scaler and the trees are past their warm-up: scores may raise alerts.
    pub fn is_warm(&self) -> bool {
        self.scaler.is_warm() && self.hst.is_warm()
    }

    /// Score of `x` with the current state; changes nothing (the `&mut` is for scratch).
    pub fn score_one(&mut self, x: &[f64]) -> Result<Score, HstError> {
        self.hst.check_dim(x.len())?;
        let d = x.len();
        self.scaler.transform(x, &mut self.a[..d]);
        self.hst.score_one(&self.a[..d])
    }

    /// Learns `x` (scaler first, then the trees with the updated scaling).
    pub fn learn_one(&mut self, x: &[f64]) -> Result<(), HstError> {
        self.hst.check_dim(x.len())?;
        let d = x.len();
        self.scaler.learn(x);
        self.scaler.transform(x, &mut self.b[..d]);
        self.hst.learn_one(&self.b[..d])
    }

    /// `score_one(x)` then `learn_one(x)`, fused when the scaling did not change.
    pub fn score_and_learn(&mut self, x: &[f64]) -> Result<Score, HstError> {
        self.hst.check_dim(x.len())?;
        let d = x.len();
        if !self.scaler.transform_learn(x, &mut self.a[..d]) {
            return self.hst.score_and_learn(&self.a[..d]);
        }
        let s = self.hst.score_one(&self.a[..d])?;
        self.scaler.transform(x, &mut self.b[..d]);
        self.hst.learn_one(&self.b[..d])?;
        Ok(s)
    }

    /// [`score_and_learn`](Self::score_and_learn) over `out.len()` rows of `xs`, identical
    /// to the per-sample calls. The scaler runs sequentially; the tree walks run batched.
    pub fn score_and_learn_batch(&mut self, xs: &[f64], out: &mut [Score]) -> Result<(), HstError> {
        let d = self.hst.n_features();
        if xs.len() != out.len() * d {
            return Err(HstError::Dim {
                expected: out.len() * d,
                got: xs.len(),
            });
        }
        for (rows, outs) in xs.chunks(PIPE_BATCH * d).zip(out.chunks_mut(PIPE_BATCH)) {
            let n = outs.len();
            for k in 0..n {
                let x = &rows[k * d..(k + 1) * d];
                self.differs[k] = self
                    .scaler
                    .transform_learn(x, &mut self.a[k * d..(k + 1) * d]);
                if self.differs[k] {
                    self.scaler.transform(x, &mut self.b[k * d..(k + 1) * d]);
                }
            }
            self.hst.score_then_learn_rows(
                &self.a[..n * d],
                &self.b[..n * d],
                &self.differs[..n],
                outs,
            );
        }
        Ok(())
    }

    /// The checkpoint bytes (see `checkpoint.rs` for the container).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.hst.encode(&mut w);
        self.scaler.encode(&mut w);
        w.finish()
    }

    /// Restores a model from [`to_bytes`](Self::to_bytes). A bad, foreign or truncated file
    /// is a one-line error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let mut r = Reader::open(bytes)?;
        let hst = HalfSpaceTrees::decode(&mut r)?;
        let scaler = crate::detect::scale::Scaler::decode(&mut r)?;
        r.finish()?;
        ScaledHst::new(scaler, hst).map_err(|e| corrupt(format!("scaler and trees disagree: {e}")))
    }

    /// Writes the checkpoint atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<(), CheckpointError> {
        crate::detect::checkpoint::write_file_atomic(path, &self.to_bytes())
    }

    /// Reads a checkpoint file; errors name the file.
    pub fn load(path: &std::path::Path) -> Result<Self, CheckpointError> {
        let bytes = crate::detect::checkpoint::read_file(path)?;
        Self::from_bytes(&bytes).map_err(|e| CheckpointError::InFile {
            path: path.to_path_buf(),
            inner: Box::new(e),
        })
    }
}
