"""Private helpers of the base layer, shared by the modules above: atomic writes (`atomic`), input checks
(`checks`), module-mode contexts (`modes`), per-sample random draws (`rng`), strict state-dict loading
(`state`) and the straight-through gradient of BPDA (`bpda`)."""
