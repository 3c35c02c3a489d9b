"""Tiny random checkpoints of every Gemma family, with offline tokenizers and processors.

They are the real transformers classes with tiny configs, so tests, demos and benchmarks run the
same code paths as the full models in seconds on a CPU, with no download. The tokenizer is a
small byte-level BPE trained in-process on a built-in English text: common words are one or a
few pieces, any unicode text encodes without unknown tokens, and Gemma's special tokens keep
their names (ids differ from the real checkpoints except <pad>=0, <eos>=1, <bos>=2, <unk>=3).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from gemmaforge.models.families import TINY_FAMILIES, family_by_name

# Text vocabulary of every tiny model (the real ones have 262,144 tokens). Gemma 3n adds two
# 128-token ranges above it for its vision and audio towers, as the real model does; Gemma 3
# with vision puts its image soft token just above it (id 262,144 in the real model), in a
# 64-token tail (the real vocabulary is 262,208).
TEXT_VOCAB = 1024
MM_VOCAB = 128
GEMMA3_VISION_TAIL = 64

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A model learns from the data it is given.
Please write a short answer to the question below, and explain your reasoning step by step.
What is the capital of France? The capital of France is Paris, a city on the river Seine.
The patient reported a mild headache and a cough for three days; no fever was measured.
This agreement is made between the company and the client, and it starts on the first day.
Our records show that the invoice was paid in full on the tenth of March for 1,250 dollars.
The image shows a small red car parked in front of a white house with a green door.
Listen to the audio clip and write down every word the speaker says, in the same order.
Good morning! How are you today? I am fine, thank you. Could you help me with this task?
Summarize the following text in one sentence. Translate this sentence into English.
Water boils at 100 degrees Celsius at sea level, and it freezes at 0 degrees.
Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42 and 2024 appear in many documents.
The weather is cold and rainy in the north, but warm and sunny in the south this week.
You are a helpful assistant. Answer the user's questions truthfully and with care.
The factory line checks each part for scratches, cracks and other visible defects.
She said that the meeting would be moved to Tuesday afternoon at half past two.
He read the book slowly, because every chapter was full of new and strange ideas.
In the morning the children walked to school, and in the evening they played outside.
The doctor asked the nurse to check the blood pressure of the patient in room seven.
Machine learning models are trained on examples, tested on new examples, and then used.
If the file cannot be found, the program prints an error message and stops at once.
The quarterly report shows that revenue grew while costs stayed about the same.
Open the door, turn on the light, and put the keys on the table next to the window.
People often ask what time it is, where the station is, and how much a ticket costs.
"""

# Common English words, so that words outside the sentences above still split into few pieces.
_WORDS = """\
about above across action after again against age ago agree air all almost alone along already also
always among amount and animal another answer any appear apply area argue arm around arrive art
article ask attack attention audience author available away baby back bad bag ball bank bar base be
beautiful because become bed before begin behavior behind believe benefit best better between
beyond big bill billion bit black blood blue board body book born both box boy break bring brother
budget build building business but buy call camera campaign can cancer candidate capital car card
care career carry case catch cause cell center central century certain chair challenge chance
change character charge check child choice choose church citizen city civil claim class clear
clearly close coach cold collection college color come commercial common community company compare
computer concern condition conference consider consumer contain continue control cost could country
couple course court cover create crime cultural culture cup current customer cut dark data daughter
day dead deal death debate decade decide decision deep defense degree describe design despite
detail determine develop development difference different difficult dinner direction director
discover discuss disease doctor dog door down draw dream drive drop drug during each early east
easy eat economic economy edge education effect effort eight either election else employee end
energy enjoy enough enter entire environment especially establish even evening event ever every
everybody everyone everything evidence exactly example executive exist expect experience expert
explain eye face fact factor fail fall family far fast father fear federal feel feeling few field
fight figure fill film final finally financial find fine finger finish fire firm first fish five
floor fly focus follow food foot force foreign forget form former forward four free friend from
front full fund future game garden gas general generation get girl give glass goal good government
great green ground group grow growth guess gun guy hair half hand hang happen happy hard have head
health hear heart heat heavy help here herself high himself history hit hold home hope hospital hot
hotel hour house however huge human hundred husband idea identify image imagine impact important
improve include including increase indeed indicate individual industry information inside instead
institution interest interesting international interview into investment involve issue item itself
job join just keep key kid kill kind kitchen know knowledge land language large last late later
laugh law lawyer lay lead leader learn least leave left leg legal less letter level lie life light
like likely line list listen little live local long look lose loss love low machine magazine main
maintain major majority make manage management manager many market marriage material matter maybe
mean measure media medical meet meeting member memory mention message method middle might military
million mind minute miss mission model modern moment money month more most mother mouth move
movement movie much music must myself name nation national natural nature near nearly necessary
need network never news newspaper next nice night none nor north note nothing notice now number
occur offer office officer official often oil old once only onto open operation opportunity option
order organization other others outside over own owner page pain painting paper parent part
participant particular particularly partner party pass past patient pattern pay peace people per
perform performance perhaps period person personal phone physical pick picture piece place plan
plant play player point police policy political politics poor popular population position positive
possible power practice prepare present president pressure pretty prevent price private probably
problem process produce product production professional professor program project property protect
prove provide public pull purpose push put quality question quickly quite race radio raise range
rate rather reach read ready real reality realize really reason receive recent recently recognize
record red reduce reflect region relate relationship religious remain remember remove report
represent republican require research resource respond response responsibility rest result return
reveal rich right rise risk road rock role room rule run safe same save say scene school science
scientist score sea season seat second section security see seek seem sell send senior sense series
serious serve service set seven several shake share shoot short shot should shoulder show side sign
significant similar simple simply since sing single sister sit site situation six size skill skin
small smile social society soldier some somebody someone something sometimes son song soon sort
sound source south southern space speak special specific speech spend sport spring staff stage
stand standard star start state statement station stay step still stock stop store story strategy
street strong structure student study stuff style subject success successful such suddenly suffer
suggest summer support sure surface system table take talk task tax teach teacher team technology
television tell ten tend term test than thank that their them themselves then theory there these
they thing think third this those though thought thousand threat three through throughout throw
thus time today together tonight too top total tough toward town trade traditional training travel
treat treatment tree trial trip trouble true truth try turn two type under understand unit until
upon use usually value various very victim view violence visit voice vote wait walk wall want war
watch water way weapon wear week weight well west western what whatever when where whether which
while white who whole whom whose why wide wife will win wind window wish with within without woman
wonder word work worker world worry would write writer wrong yard yeah year yes yet you young your
yourself yesterday
"""

# Special tokens that every tokenizer starts with, at Gemma's ids 0..3.
_HEAD = ("<pad>", "<eos>", "<bos>", "<unk>")

_TURN_TOKENS = {
    "gemma3": ("<start_of_turn>", "<end_of_turn>"),
    "gemma3-vision": ("<start_of_turn>", "<end_of_turn>"),
    "gemma3n": ("<start_of_turn>", "<end_of_turn>"),
    "gemma4": (
        "<|turn>",
        "<turn|>",
        "<|tool_response>",
        "<tool_response|>",
        "<|tool_call>",
        "<tool_call|>",
        "<|tool>",
        "<tool|>",
        "<|channel>",
        "<channel|>",
        "<|think|>",
        '<|"|>',
    ),
}

# Named multimodal tokens (the attribute names processors read), as in the real tokenizers.
_MM_TOKENS = {
    "gemma3": {},
    "gemma3-vision": {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    },
    "gemma3n": {
        "boi_token": "<start_of_image>",
        "boa_token": "<start_of_audio>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
        "eoa_token": "<end_of_audio>",
        "audio_token": "<audio_soft_token>",
    },
    "gemma4": {
        "boi_token": "<|image>",
        "eoi_token": "<image|>",
        "image_token": "<|image|>",
        "boa_token": "<|audio>",
        "eoa_token": "<audio|>",
        "audio_token": "<|audio|>",
        "video_token": "<|video|>",
    },
}

# Gemma 3n embeds its multimodal tokens through the towers' own tables, so they must sit in the
# vision range [TEXT_VOCAB, TEXT_VOCAB + 128) and audio range above it, as in the real model.
_PINNED = {
    "gemma3-vision": {"<image_soft_token>": TEXT_VOCAB},
    "gemma3n": {
        "<end_of_image>": TEXT_VOCAB,
        "<image_soft_token>": TEXT_VOCAB + 1,
        "<end_of_audio>": TEXT_VOCAB + MM_VOCAB,
        "<audio_soft_token>": TEXT_VOCAB + MM_VOCAB + 1,
    },
}


def _tokenizer_family(family: str) -> str:
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {TINY_FAMILIES}")
    return "gemma4" if family.startswith("gemma4") else family


def _family_facts(family: str):
    """The family table entry of a tiny family name (gemma3-vision is a Gemma 3)."""
    return family_by_name(_tokenizer_family(family).removesuffix("-vision"))


def vocab_size(family: str) -> int:
    """Size of the tiny tokenizer's vocabulary, which is also the model's `vocab_size`."""
    extra = {"gemma3n": 2 * MM_VOCAB, "gemma3-vision": GEMMA3_VISION_TAIL}
    return TEXT_VOCAB + extra.get(_tokenizer_family(family), 0)


@functools.cache
def _backend_json(family: str) -> str:
    """The `tokenizers` JSON for a family; cached because training takes ~0.1 s."""
    pinned = _PINNED.get(family, {})
    specials = [*_HEAD, *_TURN_TOKENS[family]]
    specials += [t for t in _MM_TOKENS[family].values() if t not in pinned]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_CORPUS.splitlines(), *(" " + w for w in _WORDS.split())], trainer)

    # Fill the unused ids up to the model's vocab_size, like Gemma's <unusedN> tokens, and place
    # the pinned tokens; every id then decodes to a name and the embedding table is fully used.
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    by_id = {i: t for t, i in pinned.items()}
    unused = 0
    for i in range(len(vocab), vocab_size(family)):
        if i not in by_id:
            by_id[i], unused = f"<unused{unused}>", unused + 1
        vocab[by_id[i]] = i
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (*specials, *by_id.values())]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B:1", special_tokens=[("<bos>", 2)]
    )
    return tok.to_str()


def tiny_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A deterministic offline tokenizer for a tiny model of `family` (any of TINY_FAMILIES).

    The Gemma 4 variants share one tokenizer. Multimodal tokens are available by name
    (`tokenizer.image_token`, `tokenizer.image_token_id`, ...), as the processors expect, and
    `apply_chat_template` uses the family's format (see `chat_template`).
    """
    family = _tokenizer_family(family)
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_backend_json(family)),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=dict(_MM_TOKENS[family]),
        chat_template=chat_template(family),
    )


# Chat templates in the format of the real checkpoints (transformers ships none for Gemma 3n/4).
# Gemma 3/3n have no system turn: the system prompt opens the first user turn.
_CONTENT = """
{%- macro content(c) -%}
{%- if c is string -%}{{ c | trim }}
{%- else -%}{%- for item in c -%}
{%- if item['type'] == 'text' -%}{{ item['text'] | trim }}
{%- elif item['type'] == 'image' -%}IMAGE
{%- elif item['type'] == 'audio' -%}AUDIO
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{{ bos_token }}"""

_GEMMA3_TURNS = """
{%- set system = messages[0]['role'] == 'system' -%}
{%- set prefix = content(messages[0]['content']) + '\n\n' if system else '' -%}
{%- for m in messages if m['role'] != 'system' -%}
<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}
{{ prefix if loop.first else '' }}{{ content(m['content']) }}<end_of_turn>
{% endfor -%}
{%- if add_generation_prompt -%}<start_of_turn>model
{% endif -%}"""

_GEMMA4_TURNS = """
{%- for m in messages -%}
<|turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}
{{ content(m['content']) }}<turn|>
{% endfor -%}
{%- if add_generation_prompt -%}<|turn>model
{% endif -%}"""


def chat_template(family: str) -> str:
    """The Jinja chat template shipped with the tiny checkpoints of `family`."""
    family = _tokenizer_family(family)
    mm = _MM_TOKENS[family]
    # Gemma 3's template writes <start_of_image>, which its processor expands; the others
    # write the soft token itself.
    image = mm.get("boi_token" if family == "gemma3-vision" else "image_token", "")
    head = _CONTENT.replace("IMAGE", image).replace("AUDIO", mm.get("audio_token", ""))
    return head + (_GEMMA4_TURNS if family == "gemma4" else _GEMMA3_TURNS)


def _token_ids(tok: PreTrainedTokenizerFast, **names: str) -> dict[str, int]:
    return {key: tok.convert_tokens_to_ids(getattr(tok, name)) for key, name in names.items()}


# Shared by every tiny decoder: 4 layers alternating sliding and full attention, with a window
# short enough that test sequences cross it.
_DECODER = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    layer_types=["sliding_attention", "full_attention"] * 2,
    sliding_window=16,
    max_position_embeddings=4096,
    final_logit_softcapping=30.0,
)


def _gemma3_config(tok: PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    return transformers.Gemma3TextConfig(
        **_DECODER, vocab_size=len(tok), query_pre_attn_scalar=_DECODER["head_dim"]
    )


# Gemma 3 4B+ pools SigLIP's 64x64 patch grid to 16x16 = 256 soft tokens per image; the tiny
# one pools an 8x8 grid (64 px, 8 px patches) to 4x4 = 16, so test sequences stay short.
_GEMMA3_IMAGE_SIZE = 64
_GEMMA3_IMAGE_TOKENS = 16


def _gemma3_vision_config(tok: PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    vision = transformers.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=_GEMMA3_IMAGE_SIZE,
        patch_size=8,
        vision_use_head=False,  # as in Gemma 3: the projector pools the patch tokens
    )
    return transformers.Gemma3Config(
        text_config=_gemma3_config(tok),
        vision_config=vision,
        mm_tokens_per_image=_GEMMA3_IMAGE_TOKENS,
        **_token_ids(
            tok,
            boi_token_index="boi_token",
            eoi_token_index="eoi_token",
            image_token_index="image_token",
        ),
    )


# Gemma 3n's processor inserts a fixed number of soft tokens per image and per audio clip; the
# model must produce the same counts. The audio encoder pads its output up to the count, so 188
# (the real value) keeps clips of up to 30 s working.
_GEMMA3N_IMAGE_TOKENS = 4
_GEMMA3N_AUDIO_TOKENS = 188


def _gemma3n_config(tok: PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    # vocab_size (1280) must equal the audio vocab_offset + 128: audio padding uses the last id.
    text = transformers.Gemma3nTextConfig(
        **_DECODER,
        vocab_size=len(tok),
        vocab_size_per_layer_input=TEXT_VOCAB,
        hidden_size_per_layer_input=16,
        laurel_rank=8,
        altup_num_inputs=4,
        num_kv_shared_layers=2,
        activation_sparsity_pattern=[0.95, 0.95, 0.0, 0.0],
    )
    # The MobileNetV5 encoder hard-codes a 2048-wide output; the channel multiplier shrinks the
    # rest, and the multi-scale fusion grid (2x2) fixes the soft tokens per image.
    vision = transformers.Gemma3nVisionConfig(
        model_args={"channel_multiplier": 0.125, "msfa_output_resolution": 2},
        vocab_offset=TEXT_VOCAB,
    )
    audio = transformers.Gemma3nAudioConfig(
        hidden_size=32,
        conf_num_hidden_layers=2,
        conf_num_attention_heads=2,
        sscp_conv_channel_size=[16, 8],
        vocab_offset=TEXT_VOCAB + MM_VOCAB,
    )
    return transformers.Gemma3nConfig(
        text_config=text,
        vision_config=vision,
        audio_config=audio,
        vision_soft_tokens_per_image=_GEMMA3N_IMAGE_TOKENS,
        audio_soft_tokens_per_image=_GEMMA3N_AUDIO_TOKENS,
        **_token_ids(
            tok,
            boi_token_id="boi_token",
            eoi_token_id="eoi_token",
            image_token_id="image_token",
            boa_token_id="boa_token",
            eoa_token_id="eoa_token",
            audio_token_id="audio_token",
        ),
    )


def _gemma4_config(tok: PreTrainedTokenizerFast, variant: str) -> transformers.PretrainedConfig:
    text = dict(_DECODER, vocab_size=len(tok), global_head_dim=64)
    if variant == "gemma4":  # E2B-like: per-layer embeddings, KV sharing, double-wide MLP
        text.update(
            vocab_size_per_layer_input=TEXT_VOCAB,
            hidden_size_per_layer_input=16,
            num_kv_shared_layers=2,
            use_double_wide_mlp=True,
        )
    else:  # 26B-A4B / 31B-like: no per-layer embeddings, keys double as values
        text.update(
            hidden_size_per_layer_input=0, attention_k_eq_v=True, num_global_key_value_heads=1
        )
    if variant == "gemma4-moe":
        text.update(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=64)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        patch_size=16,
        pooling_kernel_size=3,
        position_embedding_size=1024,
        # As in the released checkpoints: clip bounds on the linears; 26B/31B standardize output.
        use_clipped_linears=True,
        standardize=variant != "gemma4",
    )
    # The first sub-sampling conv width must equal the 128 mel bins, or its projection is misshaped.
    audio = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        subsampling_conv_channels=[128, 8],
        output_proj_dims=64,
    )
    return transformers.Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=audio if variant == "gemma4" else None,
        **_token_ids(
            tok,
            boi_token_id="boi_token",
            eoi_token_id="eoi_token",
            image_token_id="image_token",
            video_token_id="video_token",
            boa_token_id="boa_token",
            eoa_token_index="eoa_token",
            audio_token_id="audio_token",
        ),
    )


def _processor(family: str, tok: PreTrainedTokenizerFast) -> transformers.ProcessorMixin | None:
    if family == "gemma3-vision":
        size = {"height": _GEMMA3_IMAGE_SIZE, "width": _GEMMA3_IMAGE_SIZE}
        return transformers.Gemma3Processor(
            image_processor=transformers.Gemma3ImageProcessor(
                size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3
            ),
            tokenizer=tok,
            chat_template=tok.chat_template,
            image_seq_length=_GEMMA3_IMAGE_TOKENS,
        )
    if family == "gemma3n":
        return transformers.Gemma3nProcessor(
            feature_extractor=transformers.Gemma3nAudioFeatureExtractor(),
            image_processor=transformers.SiglipImageProcessor(
                size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3
            ),
            tokenizer=tok,
            chat_template=tok.chat_template,
            image_seq_length=_GEMMA3N_IMAGE_TOKENS,
            audio_seq_length=_GEMMA3N_AUDIO_TOKENS,
        )
    if family.startswith("gemma4"):
        # 70 soft tokens is the smallest image budget the Gemma 4 image processor accepts.
        return transformers.Gemma4Processor(
            feature_extractor=transformers.Gemma4AudioFeatureExtractor(),
            image_processor=transformers.Gemma4ImageProcessor(max_soft_tokens=70),
            tokenizer=tok,
            video_processor=transformers.Gemma4VideoProcessor(max_soft_tokens=70, num_frames=4),
            chat_template=tok.chat_template,
            image_seq_length=70,
        )
    return None


# With the default init (std 0.02) and 64 dims, the tied LM head cannot give any token a logit
# more than ~1.3 above the rest: a tiny model could never become confident, and its loss would
# plateau near ln(vocab). Real checkpoints have far larger embedding norms. Measured on the
# tiny gemma3 (4 fixed answers, 30 steps): loss 6.9 -> 5.8 at std 0.02, 7.8 -> 0.25 at x8.
_EMBEDDING_SCALE = 8.0


def _widen_embeddings(model) -> None:
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(_EMBEDDING_SCALE)


def _init_gemma3_projector(model) -> None:
    """Gemma 3 initialises its image projector (a bare weight matrix, which LoRA cannot adapt)
    to zeros, so a fresh model's image soft tokens are all zero and no pixel reaches the
    language model. Real checkpoints have a trained projector; give the tiny one the same
    random init as the other towers' projections (std 0.02)."""
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.02)


def make_tiny(family: str, out: str | Path, seed: int = 0) -> Path:
    """Write a random tiny checkpoint of `family` (one of TINY_FAMILIES) to `out`.

    The folder holds safetensors weights, config, generation config, tokenizer with chat template
    and, for multimodal families, the processor; the transformers Auto classes load it offline.
    The same seed gives the same weights.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {TINY_FAMILIES}")
    out = Path(out)
    tok = tiny_tokenizer(family)
    facts = _family_facts(family)
    if family == "gemma3":
        config, class_name = _gemma3_config(tok), facts.causal_lm_class
    elif family == "gemma3-vision":
        config, class_name = _gemma3_vision_config(tok), facts.multimodal_class
    elif family == "gemma3n":
        config, class_name = _gemma3n_config(tok), facts.multimodal_class
    else:
        config, class_name = _gemma4_config(tok, family), facts.multimodal_class
    # Seed a forked RNG so that building a model leaves the caller's random state alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, class_name)(config)
        _widen_embeddings(model)
        if family == "gemma3-vision":
            _init_gemma3_projector(model)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(list(facts.stop_tokens))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    processor = _processor(family, tok)
    (tok if processor is None else processor).save_pretrained(out)
    return out


# Gemma 3n's real vocabulary: 262,144 text tokens (also the per-layer embedding rows), then
# 128 vision and 128 audio ids.
_REAL_TEXT_VOCAB = 262_144


def make_gemma3n_262k(out: str | Path, multimodal: bool = False, seed: int = 0) -> Path:
    """A small random Gemma 3n with the real 262,144-token vocabulary, for benchmarks: the
    embedding, per-layer embedding and LM head are full size (what dominates memory on a
    laptop), the decoder is 4 layers of width 512. `multimodal` puts the same decoder in a
    Gemma3nForConditionalGeneration with the tiny vision and audio towers.

    The tokenizer is the tiny Gemma 3n one (its ids are a subset of the model's vocabulary).
    """
    out = Path(out)
    tok = tiny_tokenizer("gemma3n")
    config = _gemma3n_config(tok)
    text = config.text_config
    text.update(
        dict(
            vocab_size=_REAL_TEXT_VOCAB + 2 * MM_VOCAB,
            vocab_size_per_layer_input=_REAL_TEXT_VOCAB,
            hidden_size=512,
            intermediate_size=[2048] * 4,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=64,
            hidden_size_per_layer_input=64,
            laurel_rank=64,
            sliding_window=256,
        )
    )
    config.vision_config.vocab_offset = _REAL_TEXT_VOCAB
    config.audio_config.vocab_offset = _REAL_TEXT_VOCAB + MM_VOCAB
    class_name = "Gemma3nForConditionalGeneration" if multimodal else "Gemma3nForCausalLM"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, class_name)(config if multimodal else text)
    model.save_pretrained(out)
    (_processor("gemma3n", tok) if multimodal else tok).save_pretrained(out)
    return out
