"""The patching engine: residual-stream interchange interventions on Hugging Face decoders."""
