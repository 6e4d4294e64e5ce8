"""Convert the original TAEF2 weights (madebyollin/taesd, MIT) to `assets/taef2/taef2.safetensors`.

    python scripts/convert_taef2.py --encoder taef2_encoder.pth --decoder taef2_decoder.pth [--out assets/taef2]

The originals are fp16 PyTorch pickles (read with `weights_only=True`); the result keeps fp16 and loads with
`magicid.taef2.load_taef2`. The licence notice goes next to the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magicid.taef2 import from_original_state_dicts, save_taef2, taef2  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, type=Path)
    parser.add_argument("--decoder", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=Path("assets/taef2"))
    args = parser.parse_args()
    encoder = torch.load(args.encoder, map_location="cpu", weights_only=True)
    decoder = torch.load(args.decoder, map_location="cpu", weights_only=True)
    vae = taef2().half()
    vae.load_state_dict(from_original_state_dicts(encoder, decoder), strict=True)
    print(save_taef2(vae, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
