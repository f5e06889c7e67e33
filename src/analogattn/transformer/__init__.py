"""NumPy inference of real pre-trained transformers (Llama/GGUF, BERT, GPT-2)."""
