"""The model card's Hugging Face YAML front matter: read it, and write the fields the Hub
(and tools that read its cards) expect of an adapter: `base_model`, `base_model_relation:
adapter`, `library_name: peft`, `license`, `tags`."""

from __future__ import annotations

import yaml


def split_card(text: str) -> tuple[dict, str]:
    """(front matter as a dict, the Markdown after it)."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end >= 0:
            meta = yaml.safe_load(text[4:end]) or {}
            body = text[end + 4 :].lstrip("\n")
            return (meta if isinstance(meta, dict) else {}), body
    return {}, text


def join_card(meta: dict, body: str) -> str:
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front}\n---\n\n{body}"


def adapter_card(
    text: str,
    base_id: str,
    licence: str,
    hf: bool,
    modalities: list[str] | None = None,
    domain: str | None = None,
) -> str:
    """The card to publish: the base named by its canonical id (never a local path); with
    `hf`, every Hugging Face adapter field as well."""
    meta, body = split_card(text)
    meta["base_model"] = base_id
    meta["library_name"] = "peft"
    if hf:
        meta["base_model_relation"] = "adapter"
        meta["license"] = licence
        tags = [str(t) for t in meta.get("tags") or []]
        for tag in ["gemmaforge", "lora", *(modalities or []), *([domain] if domain else [])]:
            if tag not in tags:
                tags.append(tag)
        meta["tags"] = tags
    return join_card(meta, body)
