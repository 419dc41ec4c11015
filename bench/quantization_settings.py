"""The elastic-quantization benchmark's defaults that the CLI's help reads (torch-free, so
building the parser imports no torch)."""

# The ground truth's seeds: each candidate's standalone accuracy is the mean over this many
# runs (docs/architecture.md, "Elastic quantization", quotes how far one run agrees with another).
STANDALONE_SEEDS = 3
