//! The LLM poet: a pretrained chat model hosted by mistral.rs writes the poem,
//! and a logits processor holds it to the same rules as the T5 ([`rules`]).
//!
//! At every step mistral.rs hands the processor the sequence's tokens so far,
//! prompt included. The processor replays what the model has written since
//! the prompt through a [`Writing`] (the rules' [`Verse`] plus where a line
//! ends), then masks every token that would break a rule: a token of several
//! characters only if each character fits its own place, a byte piece of a
//! character (byte-level tokenizers split rarer characters so) only if some
//! character the rules allow there starts with those bytes, punctuation and
//! line breaks only after a line's last character, and the end of the answer
//! only after the poem's last line. The first character of an unused keyword
//! that can open at a place gets `keyword_bonus`, as in the T5's decoding.
//!
//! Each candidate is its own request with its own template, so mistral.rs's
//! scheduler runs a request's candidates (and other requests') together in
//! its batches; the poet blocks its caller — the pipeline's model thread —
//! until they are all answered. Scores: mean log-probability per character,
//! from the log-probabilities mistral.rs returns for the chosen tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use mistralrs::{
    parse_isq_value, CustomLogitsProcessor, DType, IsqType, Model, RequestBuilder, SamplingParams,
    StopTokens, Tensor, TextMessageRole, TextModelBuilder,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::meter::Template;
use super::novelty::LineFilter;
use super::rhyme::{is_han, RhymeTable};
use super::rules::{CharTones, Plan, Rules, Verse};
use super::{rank, Candidate, LineRequest, PoemRequest, Sampling, ScoreWeights};
use crate::error::{LlmError, PoemError};

/// Punctuation a line may end with before its line break.
const LINE_MARKS: &str = "，。！？；、,.!?;";

/// Fewer distinct Chinese characters than this in a vocabulary: not a model that writes Chinese.
const MIN_CHINESE_CHARS: usize = 500;

/// Where the LLM comes from and how it is run.
#[derive(Debug, Clone)]
pub struct LlmSpec {
    /// A hub id (`Qwen/Qwen3-1.7B`) or a local directory.
    pub model: String,
    /// In-situ quantization (`q4k`, `q8_0` …); `None` keeps the weights' own type.
    pub isq: Option<String>,
    /// Run on the CPU even where a GPU is found.
    pub cpu: bool,
    /// The training corpus's line filter (the T5's `train_lines.bloom`), so
    /// that the LLM copies no corpus line either.
    pub corpus_lines: Option<PathBuf>,
}

/// What each token of the vocabulary is, worked out once.
enum Piece {
    /// Text that may be written: characters with a tone, line marks and
    /// breaks, as UTF-8 bytes; `chars` when they are whole characters (not
    /// the bytes of part of one).
    Text {
        bytes: Vec<u8>,
        chars: Option<Vec<char>>,
    },
    /// Ends the answer.
    End,
    /// Never written: special tokens, and text with anything else in it.
    Never,
}

struct TokenTable {
    pieces: Vec<Piece>,
    /// The text tokens that start with a whole character or a character's
    /// first byte: those a step visits when no character is part-way.
    starts: Vec<u32>,
    /// The text tokens that start with a continuation byte: those a step
    /// visits while a character is part-way.
    continues: Vec<u32>,
    /// The tokens that end an answer: mistral.rs stops at any of them.
    ends: Vec<u32>,
    /// Their text, should an answer carry one.
    end_texts: Vec<String>,
    /// The tone tables of every character with a known tone, by character.
    tones: HashMap<char, CharTones>,
    /// Those characters' UTF-8 bytes, sorted, to find the ones a byte piece starts.
    by_bytes: Vec<(Vec<u8>, char)>,
}

impl TokenTable {
    /// `end_names` and `end_ids`: the model's own end-of-answer tokens, beside [`ENDS`].
    fn load(
        tokenizer_json: &Path,
        model: &str,
        end_names: &[String],
        end_ids: &[u32],
    ) -> Result<Self, LlmError> {
        let missing = |what| LlmError::Missing {
            model: model.to_owned(),
            what,
        };
        let text =
            std::fs::read_to_string(tokenizer_json).map_err(|_| missing("tokenizer.json"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| missing("a readable tokenizer.json"))?;
        let tokenizer = <tokenizers::Tokenizer as std::str::FromStr>::from_str(&text)
            .map_err(|_| missing("a tokenizer.json the tokenizers library reads"))?;
        let byte_level = is_byte_level(&json);
        let specials: HashMap<u32, String> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        let rhymes = RhymeTable::get();
        let tones: HashMap<char, CharTones> = rhymes
            .characters()
            .filter_map(|c| CharTones::of(c).map(|t| (c, t)))
            .collect();
        let mut by_bytes: Vec<(Vec<u8>, char)> = tones
            .keys()
            .map(|&c| (c.to_string().into_bytes(), c))
            .collect();
        by_bytes.sort();
        let writable = |c: char| c == '\n' || LINE_MARKS.contains(c) || tones.contains_key(&c);

        let vocab = tokenizer.get_vocab(true);
        let size = vocab.values().copied().max().map_or(0, |m| m as usize + 1);
        let mut pieces: Vec<Piece> = (0..size).map(|_| Piece::Never).collect();
        let mut chinese = std::collections::HashSet::new();
        for (token, &id) in &vocab {
            pieces[id as usize] = match specials.get(&id) {
                Some(s) if ENDS.contains(&s.as_str()) || end_names.contains(s) => Piece::End,
                Some(_) => Piece::Never,
                None => {
                    let bytes = token_bytes(token, byte_level);
                    chinese.extend(
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .filter(|&c| is_han(c)),
                    );
                    match std::str::from_utf8(&bytes) {
                        Ok(s) if !s.is_empty() && s.chars().all(writable) => Piece::Text {
                            chars: Some(s.chars().collect()),
                            bytes,
                        },
                        Ok(_) => Piece::Never,
                        // Part of a character: kept when its whole characters
                        // are writable; the rules judge its bytes in place.
                        Err(_)
                            if String::from_utf8_lossy(&bytes)
                                .chars()
                                .all(|c| c == char::REPLACEMENT_CHARACTER || writable(c)) =>
                        {
                            Piece::Text { bytes, chars: None }
                        }
                        Err(_) => Piece::Never,
                    }
                }
            };
        }
        if chinese.len() < MIN_CHINESE_CHARS {
            return Err(LlmError::NoChinese {
                model: model.to_owned(),
                found: chinese.len(),
            });
        }
        for &id in end_ids {
            if let Some(piece) = pieces.get_mut(id as usize) {
                *piece = Piece::End;
            }
        }
        let ends: Vec<u32> = (0..pieces.len() as u32)
            .filter(|&id| matches!(pieces[id as usize], Piece::End))
            .collect();
        if ends.is_empty() {
            return Err(LlmError::Load {
                model: model.to_owned(),
                cause: anyhow::anyhow!(
                    "no end-of-answer token: neither its tokenizer_config.json (eos_token) nor its generation_config.json (eos_token_id) names one"
                ),
            });
        }
        let end_texts = ends
            .iter()
            .filter_map(|&id| tokenizer.id_to_token(id))
            .collect();
        let (mut starts, mut continues) = (Vec::new(), Vec::new());
        for (id, piece) in pieces.iter().enumerate() {
            if let Piece::Text { bytes, .. } = piece {
                if (0x80..0xC0).contains(&bytes[0]) {
                    continues.push(id as u32);
                } else {
                    starts.push(id as u32);
                }
            }
        }
        Ok(Self {
            pieces,
            starts,
            continues,
            ends,
            end_texts,
            tones,
            by_bytes,
        })
    }

    /// Whether some character the writing allows next starts with `partial`.
    fn completes(&self, writing: &Writing, ctx: &Context, partial: &[u8]) -> bool {
        let start = self
            .by_bytes
            .partition_point(|(b, _)| b.as_slice() < partial);
        self.by_bytes[start..]
            .iter()
            .take_while(|(b, _)| b.starts_with(partial))
            .any(|&(_, c)| writing.accepts(ctx, self, c))
    }
}

/// Special tokens that end a chat answer.
const ENDS: [&str; 4] = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"];

/// Whether the tokenizer writes bytes as the GPT-2 byte-level alphabet (Qwen, Llama 3, GLM 4).
fn is_byte_level(json: &serde_json::Value) -> bool {
    fn has(v: &serde_json::Value) -> bool {
        v["type"] == "ByteLevel"
            || v["decoders"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(has))
    }
    has(&json["decoder"])
}

/// A token's text as bytes: `<0xE6>` byte-fallback pieces are that byte; in a
/// byte-level vocabulary each character stands for one byte; elsewhere `▁` is a space.
fn token_bytes(token: &str, byte_level: bool) -> Vec<u8> {
    if let Some(hex) = token.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    if byte_level {
        if let Some(bytes) = token.chars().map(byte_of_char).collect::<Option<Vec<u8>>>() {
            return bytes;
        }
    }
    token.replace('▁', " ").into_bytes()
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable bytes stand for
/// themselves, the others for 256, 257 … in byte order.
fn byte_of_char(c: char) -> Option<u8> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let code = c as u32;
    if code < 256 && printable(code) {
        return Some(code as u8);
    }
    let offset = code.checked_sub(256)?;
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(offset as usize)
        .map(|b| b as u8)
}

/// What one request's processor works with.
struct Context {
    plan: Arc<Plan>,
    rules: Arc<Rules>,
    keyword_bonus: f32,
}

/// A poem being written token by token: the rules' verse, whether the
/// current line is complete (then a mark and a line break may follow), and
/// the bytes of a character begun but not finished.
#[derive(Clone)]
struct Writing {
    verse: Verse,
    /// The current line has its characters; what follows is its mark or line break.
    closed: bool,
    marked: bool,
    partial: Vec<u8>,
}

impl Writing {
    fn new(verse: Verse) -> Self {
        Self {
            verse,
            closed: false,
            marked: false,
            partial: Vec::new(),
        }
    }

    /// Whether the line being written is the last one the model writes.
    fn on_last_line(&self) -> bool {
        self.verse.line() + self.verse.rest.len() + 1 == self.verse.template.form.lines()
    }

    fn may_end(&self) -> bool {
        self.closed && self.on_last_line() && self.partial.is_empty()
    }

    /// Whether `c` may come next.
    fn accepts(&self, ctx: &Context, table: &TokenTable, c: char) -> bool {
        if c == '\n' {
            return self.closed && !self.on_last_line();
        }
        if LINE_MARKS.contains(c) {
            return self.closed && !self.marked;
        }
        match table.tones.get(&c) {
            Some(ct) if !self.closed => {
                let pos = self.verse.current.len();
                self.verse.allows(&ctx.plan, &ctx.rules, ct, pos, &[])
                    && !self.verse.refuses(&ctx.plan, &ctx.rules, c)
            }
            _ => false,
        }
    }

    /// Writes `c`, which [`Writing::accepts`].
    fn write(&mut self, ctx: &Context, table: &TokenTable, c: char) {
        if c == '\n' {
            self.verse.end_line();
            self.closed = false;
            self.marked = false;
        } else if LINE_MARKS.contains(c) {
            self.marked = true;
        } else if let Some(ct) = table.tones.get(&c) {
            self.verse.push(&ctx.rules, ct, None);
            self.closed = self.verse.current.len() == ctx.plan.form.chars_per_line();
        }
    }

    /// Feeds a token's bytes; `false` (and the writing left part-way) when
    /// one of its characters breaks a rule, or when the token runs on past a
    /// line break: a token never straddles two lines.
    fn feed(&mut self, ctx: &Context, table: &TokenTable, bytes: &[u8]) -> bool {
        let mut broke = false;
        for &b in bytes {
            if broke {
                return false;
            }
            self.partial.push(b);
            match std::str::from_utf8(&self.partial) {
                Ok(s) => {
                    let c = s.chars().next().expect("one byte at least");
                    if !self.accepts(ctx, table, c) {
                        return false;
                    }
                    self.partial.clear();
                    self.write(ctx, table, c);
                    broke = c == '\n';
                }
                // A character begun: wait for its other bytes.
                Err(e) if e.error_len().is_none() => {}
                Err(_) => return false,
            }
        }
        self.partial.is_empty() || table.completes(self, ctx, &self.partial.clone())
    }
}

/// The logits processor of one candidate.
struct RuleMask {
    table: Arc<TokenTable>,
    ctx: Context,
    start: Writing,
    /// The prompt's length: the context of the first call.
    prompt_len: OnceLock<usize>,
    /// The model's own log-probabilities of the tokens chosen, before the mask.
    score: Arc<Mutex<Score>>,
}

/// The running sum of the chosen tokens' log-probabilities under the model:
/// each step keeps its full log-softmax, and the next step, which sees the
/// token chosen, adds that token's.
#[derive(Default)]
struct Score {
    last: Vec<f32>,
    sum: f64,
}

impl RuleMask {
    /// The writing after the tokens the model has written.
    fn replay(&self, written: &[u32]) -> Writing {
        let mut writing = self.start.clone();
        for &id in written {
            if let Some(Piece::Text { bytes, .. }) = self.table.pieces.get(id as usize) {
                // Each token was allowed when it was chosen.
                writing.feed(&self.ctx, &self.table, bytes);
            }
        }
        writing
    }

    /// 0 for an allowed token (plus the keyword bonus), −∞ for the others.
    /// Only the tokens that can be text here are visited: those starting
    /// with a continuation byte while a character is part-way, else the others.
    fn mask(&self, writing: &Writing, len: usize) -> Vec<f32> {
        let (ctx, table) = (&self.ctx, &*self.table);
        let mut mask = vec![f32::NEG_INFINITY; len];
        if writing.may_end() {
            for &id in &table.ends {
                if let Some(m) = mask.get_mut(id as usize) {
                    *m = 0.0;
                }
            }
        }
        let openings = if writing.closed || !writing.partial.is_empty() {
            HashMap::new()
        } else {
            writing
                .verse
                .keyword_openings(&ctx.plan, &ctx.rules, |c| table.tones.get(&c))
        };
        // Whether a character may come next, asked once per character a step.
        let mut accepted: HashMap<char, bool> = HashMap::new();
        let mut accepts = |c: char| {
            *accepted
                .entry(c)
                .or_insert_with(|| writing.accepts(ctx, table, c))
        };
        let visit = if writing.partial.is_empty() {
            &table.starts
        } else {
            &table.continues
        };
        for &id in visit {
            let Some(Piece::Text { bytes, chars }) = table.pieces.get(id as usize) else {
                continue;
            };
            if id as usize >= len {
                continue;
            }
            let allowed = match chars.as_deref() {
                Some([c]) if writing.partial.is_empty() => accepts(*c),
                // Several characters: the first must fit before the rest is tried.
                Some([first, ..]) if writing.partial.is_empty() => {
                    accepts(*first) && writing.clone().feed(ctx, table, bytes)
                }
                _ => writing.clone().feed(ctx, table, bytes),
            };
            if !allowed {
                continue;
            }
            // A keyword opens when the token begins it (or is it, and more).
            let opens = chars.as_deref().is_some_and(|cs| {
                openings
                    .get(&cs[0])
                    .is_some_and(|rest| cs[1..].iter().zip(rest).all(|(a, b)| a == b))
            });
            mask[id as usize] = if opens { ctx.keyword_bonus } else { 0.0 };
        }
        // Nothing fits (the rules have no way on): end, and the candidate is dropped.
        if mask.iter().all(|m| m.is_infinite()) {
            for &id in &table.ends {
                if let Some(m) = mask.get_mut(id as usize) {
                    *m = 0.0;
                }
            }
        }
        mask
    }

    /// Adds the token just chosen (the context's last) to the score, and
    /// keeps this step's log-softmax for the next.
    fn keep_score(
        &self,
        logits: &Tensor,
        context: &[u32],
        prompt_len: usize,
    ) -> mistralrs::Result<()> {
        let raw: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = raw
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
        let mut score = self
            .score
            .lock()
            .expect("the score's lock is never poisoned");
        if context.len() > prompt_len {
            let chosen = *context.last().expect("a token was chosen");
            if let Some(&lp) = score.last.get(chosen as usize) {
                score.sum += lp as f64;
            }
        }
        score.last = raw.into_iter().map(|l| l - max - log_sum).collect();
        Ok(())
    }
}

impl CustomLogitsProcessor for RuleMask {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let prompt_len = *self.prompt_len.get_or_init(|| context.len());
        self.keep_score(logits, context, prompt_len)?;
        let writing = self.replay(&context[prompt_len.min(context.len())..]);
        let len = logits.dims().last().copied().unwrap_or(0);
        let mask = self.mask(&writing, len);
        let mask = Tensor::from_vec(mask, len, logits.device())?.to_dtype(logits.dtype())?;
        logits.broadcast_add(&mask)
    }
}

/// A chat LLM under the rules.
pub struct LlmPoet {
    runtime: tokio::runtime::Runtime,
    model: Model,
    table: Arc<TokenTable>,
    rules: Arc<Rules>,
}

impl LlmPoet {
    pub fn load(spec: &LlmSpec) -> Result<Self, LlmError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| LlmError::Generate(e.into()))?;
        let local = Path::new(&spec.model);
        if local.is_dir() {
            check_dir(local, &spec.model)?;
        }
        let file = |name: &str| -> Result<Option<PathBuf>, LlmError> {
            if local.is_dir() {
                let path = local.join(name);
                return Ok(path.is_file().then_some(path));
            }
            hub_file(&spec.model, name)
        };
        let tokenizer_json = file("tokenizer.json")?.ok_or_else(|| LlmError::Missing {
            model: spec.model.clone(),
            what: "tokenizer.json",
        })?;
        let (end_names, end_ids) = end_tokens(
            file("tokenizer_config.json").ok().flatten(),
            file("generation_config.json").ok().flatten(),
        );
        let table = TokenTable::load(&tokenizer_json, &spec.model, &end_names, &end_ids)?;
        let mut builder = TextModelBuilder::new(&spec.model);
        if spec.cpu {
            builder = builder.with_force_cpu();
        }
        if let Some(isq) = &spec.isq {
            let isq: IsqType = parse_isq_value(isq, None).map_err(|e| LlmError::Load {
                model: spec.model.clone(),
                cause: anyhow::anyhow!("unknown quantization '{isq}': {e}"),
            })?;
            builder = builder.with_isq(isq);
        }
        let model = runtime
            .block_on(builder.build())
            .map_err(|source| LlmError::Load {
                model: spec.model.clone(),
                cause: source,
            })?;
        let novelty = spec
            .corpus_lines
            .as_deref()
            .map(LineFilter::load)
            .transpose()
            .map_err(|e| LlmError::Load {
                model: spec.model.clone(),
                cause: e.into(),
            })?;
        let rules = Rules::new(table.tones.values(), novelty);
        Ok(Self {
            runtime,
            model,
            table: Arc::new(table),
            rules: Arc::new(rules),
        })
    }

    /// The candidates of each request, in the requests' order; each
    /// candidate is its own sequence in mistral.rs's batches.
    pub fn write_batch(
        &mut self,
        requests: &[PoemRequest],
        sampling: Sampling,
    ) -> Vec<Result<Vec<Candidate>, PoemError>> {
        let mut jobs: Vec<(usize, Arc<Plan>, Template)> = Vec::new();
        let mut answers: Vec<Option<Result<Vec<Candidate>, PoemError>>> =
            requests.iter().map(|_| None).collect();
        for (i, req) in requests.iter().enumerate() {
            match Plan::new(req, |c| self.table.tones.contains_key(&c)) {
                Ok(plan) => {
                    let templates = plan.templates();
                    let plan = Arc::new(plan);
                    let mut rng = StdRng::seed_from_u64(req.seed);
                    for _ in 0..req.candidates.max(1) {
                        let template = templates[rng.random_range(0..templates.len())];
                        jobs.push((i, Arc::clone(&plan), template));
                    }
                }
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        let asks = jobs.iter().map(|(i, plan, template)| {
            let req = &requests[*i];
            let prompt = poem_prompt(req);
            self.ask(prompt, plan, Writing::new(Verse::new(*template)), sampling)
        });
        let replies = self.runtime.block_on(futures_util::future::join_all(asks));
        let mut per_request: HashMap<usize, Vec<Candidate>> = HashMap::new();
        let mut failures: HashMap<usize, LlmError> = HashMap::new();
        for ((i, plan, _), reply) in jobs.iter().zip(replies) {
            match reply {
                Ok(Some((lines, mean))) => {
                    let candidates = per_request.entry(*i).or_default();
                    // Candidates of one template can come out alike (greedy, above all).
                    if candidates.iter().all(|c| c.lines != lines) {
                        let used = plan.keywords_used(&lines);
                        candidates.push(Candidate::new(lines, mean, used, plan.keywords.len()));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failures.insert(*i, e);
                }
            }
        }
        for (i, answer) in answers.iter_mut().enumerate() {
            if answer.is_some() {
                continue;
            }
            *answer = Some(match (per_request.remove(&i), failures.remove(&i)) {
                (Some(mut c), _) => {
                    rank(&mut c, ScoreWeights::of_poet(sampling));
                    Ok(c)
                }
                (None, Some(e)) => Err(PoemError::Llm(e)),
                (None, None) => Err(PoemError::NoPoem),
            });
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    }

    /// 换一句: the model writes only the new line, under the kept lines'
    /// template, rhyme and characters; each candidate is the poem with it.
    pub fn rewrite(
        &mut self,
        request: &LineRequest,
        sampling: Sampling,
    ) -> Result<Vec<Candidate>, PoemError> {
        let plan = Arc::new(Plan::new(&request.poem, |c| {
            self.table.tones.contains_key(&c)
        })?);
        let verse = Verse::rewriting(plan.form, &request.lines, request.line)?;
        let prompt = line_prompt(request);
        let asks = (0..request.poem.candidates.max(1))
            .map(|_| self.ask(prompt.clone(), &plan, Writing::new(verse.clone()), sampling));
        let replies = self.runtime.block_on(futures_util::future::join_all(asks));
        let mut candidates: Vec<Candidate> = Vec::new();
        for reply in replies {
            let Some((new, mean)) = reply.map_err(PoemError::Llm)? else {
                continue;
            };
            let mut lines = request.lines.clone();
            lines[request.line] = new.into_iter().next().expect("one line");
            if candidates.iter().any(|c| c.lines == lines) {
                continue;
            }
            let used = plan.keywords_used(&lines);
            candidates.push(Candidate::new(lines, mean, used, plan.keywords.len()));
        }
        if candidates.is_empty() {
            return Err(PoemError::NoPoem);
        }
        rank(&mut candidates, ScoreWeights::of_poet(sampling));
        Ok(candidates)
    }

    /// One candidate: the lines written and their mean log-probability per
    /// character; `None` when the model ended before the poem did.
    async fn ask(
        &self,
        prompt: String,
        plan: &Arc<Plan>,
        start: Writing,
        sampling: Sampling,
    ) -> Result<Option<(Vec<String>, f64)>, LlmError> {
        let expected =
            start.verse.template.form.lines() - start.verse.line() - start.verse.rest.len();
        let n = plan.form.chars_per_line();
        let score = Arc::new(Mutex::new(Score::default()));
        let processor = RuleMask {
            table: Arc::clone(&self.table),
            ctx: Context {
                plan: Arc::clone(plan),
                rules: Arc::clone(&self.rules),
                keyword_bonus: sampling.keyword_bonus,
            },
            start,
            prompt_len: OnceLock::new(),
            score: Arc::clone(&score),
        };
        // Room for a token per character, marks and breaks, and byte pieces.
        let max_len = Some(expected * (n + 2) * 3 + 4);
        let stop_toks = Some(StopTokens::Ids(self.table.ends.clone()));
        let params = if sampling.temperature <= 0.0 {
            SamplingParams {
                max_len,
                stop_toks,
                ..SamplingParams::deterministic()
            }
        } else {
            SamplingParams {
                temperature: Some(sampling.temperature),
                top_p: Some(sampling.top_p),
                max_len,
                stop_toks,
                ..SamplingParams::neutral()
            }
        };
        let request = RequestBuilder::new()
            .add_message(TextMessageRole::User, prompt)
            .enable_thinking(false)
            .set_sampling(params)
            .add_logits_processor(Arc::new(processor));
        let response = self
            .model
            .send_chat_request(request)
            .await
            .map_err(|e| LlmError::Generate(anyhow::anyhow!("{e}")))?;
        let Some(choice) = response.choices.into_iter().next() else {
            return Ok(None);
        };
        let mut text = choice.message.content.unwrap_or_default();
        for end in &self.table.end_texts {
            text = text.replace(end.as_str(), "");
        }
        let lines: Vec<String> = text
            .split(|c: char| c == '\n' || LINE_MARKS.contains(c))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if lines.len() != expected || lines.iter().any(|l| l.chars().count() != n) {
            return Ok(None);
        }
        let logprob = score
            .lock()
            .expect("the score's lock is never poisoned")
            .sum;
        Ok(Some((lines, logprob / (expected * n) as f64)))
    }
}

/// The instruction for a new poem: form, keywords, acrostic.
fn poem_prompt(req: &PoemRequest) -> String {
    let mut prompt = format!("请写一首{}，", form_words(req));
    if !req.keywords.is_empty() {
        let images: Vec<String> = req.keywords.iter().map(|k| format!("「{k}」")).collect();
        prompt.push_str(&format!("以{}为意象，", images.join("")));
    }
    if let Some(a) = &req.acrostic {
        prompt.push_str(&format!("藏头「{a}」，"));
    }
    prompt.push_str("每句一行，只写诗句，不要标题和解释。");
    prompt
}

/// The instruction for 换一句: the poem, and which line to write anew.
fn line_prompt(req: &LineRequest) -> String {
    format!(
        "这是一首{}：\n{}\n请只重写第{}句「{}」，写出新的一句，不要解释。",
        form_words(&req.poem),
        req.lines.join("\n"),
        req.line + 1,
        req.lines[req.line]
    )
}

fn form_words(req: &PoemRequest) -> &'static str {
    match req.form {
        super::Form::WuJue => "五言绝句（四句，每句五字）",
        super::Form::QiJue => "七言绝句（四句，每句七字）",
        super::Form::WuLv => "五言律诗（八句，每句五字）",
        super::Form::QiLv => "七言律诗（八句，每句七字）",
    }
}

/// A local model directory must have its config, tokenizer and weights.
fn check_dir(dir: &Path, model: &str) -> Result<(), LlmError> {
    let missing = |what| LlmError::Missing {
        model: model.to_owned(),
        what,
    };
    if !dir.join("config.json").is_file() {
        return Err(missing("config.json"));
    }
    if !dir.join("tokenizer.json").is_file() {
        return Err(missing("tokenizer.json"));
    }
    let has_weights = std::fs::read_dir(dir)
        .map_err(|_| missing("a readable directory"))?
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
    if !has_weights {
        return Err(missing("*.safetensors weights"));
    }
    Ok(())
}

/// A file of a hub model, from the local cache or downloaded: the
/// tokenizer.json is required (an error says the id or the network is wrong);
/// the others may be missing (`None`).
fn hub_file(model: &str, name: &str) -> Result<Option<PathBuf>, LlmError> {
    let api = hf_hub::api::sync::Api::new().map_err(|e| LlmError::Load {
        model: model.to_owned(),
        cause: e.into(),
    })?;
    match api.model(model.to_owned()).get(name) {
        Ok(path) => Ok(Some(path)),
        Err(_) if name != "tokenizer.json" => Ok(None),
        Err(e) => Err(LlmError::Load {
            model: model.to_owned(),
            cause: anyhow::anyhow!(
                "{e}; is the id right, and is the hub reachable (or the model in the local cache)?"
            ),
        }),
    }
}

/// The model's own end-of-answer tokens: `eos_token` of tokenizer_config.json
/// (a name) and `eos_token_id` of generation_config.json (one id or several).
fn end_tokens(
    tokenizer_config: Option<PathBuf>,
    generation_config: Option<PathBuf>,
) -> (Vec<String>, Vec<u32>) {
    let read = |path: Option<PathBuf>| -> serde_json::Value {
        path.and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    let eos = &read(tokenizer_config)["eos_token"];
    let names = eos
        .as_str()
        .or_else(|| eos["content"].as_str())
        .map(|s| vec![s.to_owned()])
        .unwrap_or_default();
    let ids = &read(generation_config)["eos_token_id"];
    let ids = match ids.as_array() {
        Some(list) => list
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        None => ids.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
    };
    (names, ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poem::Form;

    fn table() -> TokenTable {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3-tiny/tokenizer.json");
        TokenTable::load(&path, "qwen3-tiny", &[], &[]).unwrap()
    }

    fn context(table: &TokenTable, form: Form) -> Context {
        let req = PoemRequest {
            form,
            keywords: Vec::new(),
            acrostic: None,
            candidates: 1,
            seed: 0,
        };
        Context {
            plan: Arc::new(Plan::new(&req, |_| true).unwrap()),
            rules: Arc::new(Rules::new(table.tones.values(), None)),
            keyword_bonus: 0.0,
        }
    }

    /// A 五绝 written from 仄起, first line unrhymed: 中仄中平仄 / 平平中仄平 …
    fn writing() -> Writing {
        Writing::new(Verse::new(Template {
            form: Form::WuJue,
            first_second: crate::poem::rhyme::Tone::Ze,
            first_rhymes: false,
        }))
    }

    #[test]
    fn gpt2_byte_alphabet_is_read_back() {
        assert_eq!(byte_of_char('Ġ'), Some(b' '));
        assert_eq!(byte_of_char('a'), Some(b'a'));
        assert_eq!(token_bytes("æĺ¥", true), "春".as_bytes());
        assert_eq!(token_bytes("<0xE6>", false), [0xE6]);
        assert_eq!(token_bytes("▁春", false), " 春".as_bytes());
    }

    #[test]
    fn a_token_never_runs_past_a_line_break() {
        let table = table();
        let ctx = context(&table, Form::WuJue);
        let mut w = writing();
        assert!(
            w.feed(&ctx, &table, "白日依山尽".as_bytes()),
            "a line that fits"
        );
        // The mark and the break may share a token; the next line may not join them.
        assert!(!w.clone().feed(&ctx, &table, "。\n黄".as_bytes()));
        assert!(w.clone().feed(&ctx, &table, "。\n".as_bytes()));
        // A character after a full line, or a break inside one, breaks the rules.
        assert!(!w.clone().feed(&ctx, &table, "黄".as_bytes()));
        let mut fresh = writing();
        assert!(!fresh.feed(&ctx, &table, "白日\n".as_bytes()));
        assert!(w.feed(&ctx, &table, "，\n".as_bytes()));
        assert!(w.feed(&ctx, &table, "黄".as_bytes()));
    }

    #[test]
    fn a_corpus_line_is_refused_with_the_line_filter() {
        let table = table();
        let mut ctx = context(&table, Form::WuJue);
        let filter = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/poet-t5")
            .join(crate::poem::LINE_FILTER_FILE);
        ctx.rules = Arc::new(Rules::new(
            table.tones.values(),
            Some(LineFilter::load(&filter).unwrap()),
        ));
        let mut w = writing();
        assert!(w.feed(&ctx, &table, "白日依山".as_bytes()));
        // 登鹳雀楼's first line is the corpus's: its last character is refused.
        assert!(!w.clone().feed(&ctx, &table, "尽".as_bytes()));
    }

    #[test]
    fn byte_pieces_go_on_only_into_allowed_characters() {
        let table = table();
        let ctx = context(&table, Form::WuJue);
        let w = writing();
        let bai = "白".as_bytes();
        // The first byte, then the first two, of a character that fits the first place.
        assert!(w.clone().feed(&ctx, &table, &bai[..1]));
        assert!(w.clone().feed(&ctx, &table, &bai[..2]));
        let mut split = w.clone();
        assert!(split.feed(&ctx, &table, &bai[..2]) && split.feed(&ctx, &table, &bai[2..]));
        assert_eq!(split.verse.current, ['白']);
        // An emoji's first bytes start no character with a tone.
        assert!(!w.clone().feed(&ctx, &table, &"🌙".as_bytes()[..2]));
        // The poem may not end before its last line.
        assert!(!w.may_end());
    }

    #[test]
    fn a_vocabulary_without_chinese_is_refused() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3-tiny/tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        // Only the 256 bytes and the special tokens: Chinese only as byte pieces.
        let vocab = json["model"]["vocab"].as_object().unwrap().clone();
        let bytes_only: serde_json::Map<String, serde_json::Value> = vocab
            .into_iter()
            .filter(|(token, _)| token.chars().count() == 1 || token.starts_with("<|"))
            .collect();
        json["model"]["vocab"] = bytes_only.into();
        json["model"]["merges"] = serde_json::json!([]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        match TokenTable::load(&path, "bytes-only", &[], &[]) {
            Err(LlmError::NoChinese { found, .. }) => assert_eq!(found, 0),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a vocabulary without Chinese was taken"),
        }
    }
}
