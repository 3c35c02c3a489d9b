"""The adapter hub: publish, find, pull and verify Gemma LoRA adapters.

Layout (layers point down):

- `gate.py` (ground): every check an adapter folder must pass, shared by the server on upload
  and the client before publishing and after pulling: the file allow-list judged by name and
  content, the strict safetensors parse, the signature (via `gemmaforge.signing`), shape-level
  compatibility with a registered base, modality tags, the base reference and the licence.
- `bases.py` (ground): a registered base model as plain data (`BaseModel`): its canonical id
  and revision, per-weight shapes read from safetensors headers or GGUF metadata (never the
  weights), tokenizer / chat-template / weight hashes, and its licence.
- `server/` (app): the FastAPI + SQLAlchemy server: namespaces, tokens, versions, blobs, the
  Hugging Face read API. It calls the gate on every upload.
- `client/` (library): talks to a server; calls the gate before publishing and after pulling.

The CLI verbs live in `cli/hub.py`; `docs/hub.md` describes the hub for users.
"""
