#!/usr/bin/env python3
"""Self-test of actorlib's pure parts: prompt text diversity and trace arrivals.

Run from this folder:  python3 -m unittest -v test_actorlib
"""

from __future__ import annotations

import os
import unittest

from testkit.actor_harness import TRACE_DIR


class LibTests(unittest.TestCase):
    def test_text_is_diverse(self):
        import random

        from actorlib import text
        rng = random.Random(1)
        prompts = [text.human_message(rng, 200, "jazz harmony", 0) for _ in range(50)]
        self.assertEqual(len(set(prompts)), 50)
        self.assertTrue(all(150 <= text.word_count(p) <= 260 for p in prompts), [text.word_count(p) for p in prompts])
        hp = {text.harvest_prompt(rng, i) for i in range(200)}
        self.assertEqual(len(hp), 200)
        _, code = text.app_prompt(rng, 1000)
        self.assertTrue(800 <= text.word_count(code) <= 1300)

    @unittest.skipUnless(os.path.isdir(TRACE_DIR), "shared traces not present")
    def test_trace_arrivals(self):
        import random

        from actorlib import trace
        rows = trace.load(os.path.join(TRACE_DIR, "AzureLLMInferenceTrace_code.csv"))
        self.assertGreater(len(rows), 1000)
        arr = trace.arrivals(rows, random.Random(3), 0.05, 10.0)
        offs = [next(arr)[0] for _ in range(200)]
        self.assertEqual(offs[0], 0.0)
        self.assertEqual(offs, sorted(offs))
        gaps = [b - a for a, b in zip(offs, offs[1:])]
        mean = sum(gaps) / len(gaps)
        var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
        self.assertGreater(var ** 0.5 / mean, 1.2)  # bursty: more variable than Poisson (CV 1)


if __name__ == "__main__":
    unittest.main()
