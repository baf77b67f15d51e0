"""Synthetic but diverse prompt text.

Nothing here is meant to be meaningful; it is meant to be *varied* (no two
prompts alike, realistic word and line lengths, natural-looking structure) so
that request sizes and payload entropy resemble real traffic.  Every function
takes a random.Random so that actors are reproducible from --seed.
"""

from __future__ import annotations

import random

TOPICS = (
    "distributed consensus", "sourdough fermentation", "medieval trade routes",
    "container orchestration", "coral reef ecology", "monetary policy",
    "quantum error correction", "urban cycling infrastructure", "jazz harmony",
    "protein folding", "supply chain resilience", "compiler optimisation",
    "volcanic soil chemistry", "renaissance portraiture", "battery recycling",
    "game theory in auctions", "the history of cartography", "TCP congestion control",
    "mountain weather forecasting", "behavioural economics", "bird migration",
    "relational database indexing", "ancient Roman aqueducts", "solar panel efficiency",
    "language acquisition in children", "the French revolution", "graph neural networks",
    "kidney physiology", "wine making", "cryptographic hash functions",
    "organic chemistry reaction mechanisms", "the stoic philosophers", "garden composting",
    "orbital mechanics", "customer churn analysis", "noise cancelling headphones",
    "glacier dynamics", "the printing press", "microservice observability",
    "tax law for freelancers", "marathon training", "ocean acidification",
    "public key infrastructure", "baroque music", "semiconductor lithography",
    "vaccine development", "board game design", "rust ownership and borrowing",
    "climate adaptation in cities", "the silk road", "reinforcement learning",
    "home electrical wiring", "the immune system", "impressionist painting",
    "inflation and interest rates", "carbon capture", "functional programming",
    "coffee roasting", "plate tectonics", "employment contracts", "sleep science",
    "wind turbine design", "the cold war", "kubernetes networking", "photosynthesis",
    "bread baking at altitude", "nuclear fusion", "software licensing",
    "vertical farming", "probability puzzles", "the water cycle", "Byzantine architecture",
)

NOUNS = (
    "system", "approach", "result", "team", "design", "problem", "model", "process",
    "budget", "schedule", "report", "draft", "function", "table", "query", "server",
    "garden", "recipe", "argument", "essay", "chapter", "experiment", "sample",
    "customer", "manager", "student", "teacher", "paper", "deadline", "project",
    "network", "database", "interface", "library", "pipeline", "dataset", "metric",
    "summary", "outline", "email", "presentation", "meeting", "policy", "proposal",
    "strategy", "timeline", "account", "invoice", "contract", "feature", "bug",
    "test", "release", "config", "cluster", "cache", "request", "response", "file",
    "story", "character", "scene", "poem", "letter", "plan", "routine", "diet",
    "question", "answer", "explanation", "example", "comparison", "trade-off",
)

ADJECTIVES = (
    "simple", "detailed", "short", "long", "clear", "robust", "efficient", "slow",
    "confusing", "important", "recent", "old", "new", "internal", "public", "small",
    "large", "tricky", "reliable", "flexible", "formal", "casual", "concise",
    "technical", "practical", "theoretical", "specific", "general", "rough", "final",
    "current", "previous", "alternative", "optimal", "reasonable", "strange",
)

VERBS = (
    "explain", "improve", "summarise", "rewrite", "review", "compare", "describe",
    "analyse", "fix", "design", "plan", "translate", "simplify", "check", "outline",
    "draft", "debug", "optimise", "structure", "clarify", "shorten", "expand",
)

ADVERBS = (
    "quickly", "carefully", "roughly", "clearly", "briefly", "honestly", "usually",
    "probably", "definitely", "actually", "currently", "recently", "eventually",
)

CONNECTORS = (
    "However,", "Also,", "In addition,", "On the other hand,", "Basically,",
    "For context,", "To be honest,", "Right now,", "At the moment,", "Ideally,",
    "In practice,", "Last week,", "For example,", "Meanwhile,", "Unfortunately,",
)

OPENERS = (
    "Can you {v} the {a} {n} below?",
    "I need help to {v} my {n} about {t}.",
    "Could you {v} this {n} for me? It is about {t}.",
    "Please {v} the following {n} and keep it {a}.",
    "What is the best way to {v} a {a} {n} related to {t}?",
    "I'm working on a {n} about {t}. Can you {v} it?",
    "Help me {v} this {a} {n}.",
    "Quick question about {t}: how would you {v} the {n}?",
    "Here is my {n}. {V} it, please, and point out anything {a}.",
    "I have a {a} {n} on {t} and I want to {v} it.",
)

FOLLOW_UPS = (
    "Thanks. Can you make it more {a}?",
    "That helps. What about the {n} part?",
    "Could you {v} that again but {adv}?",
    "Why did you {v} the {n} that way?",
    "Can you give me an example with {t}?",
    "Ok, and how does this compare to a {a} {n}?",
    "Shorter please.",
    "Great, now {v} the second {n}.",
    "I don't get the part about the {n}. Can you {v} it?",
    "What would change if the {n} were {a}?",
)

SENTENCE_FORMS = (
    "The {a} {n} {adv} needs a {a2} {n2}.",
    "We {v} the {n} every week, but the {n2} stays {a}.",
    "{C} the {n} was {a} and the {n2} was {a2}.",
    "My {n} depends on a {a} {n2} that nobody wants to {v}.",
    "I think the {n} is {a}, although the {n2} could be {a2}.",
    "{C} we tried to {v} the {n} with a {a} {n2}.",
    "The {n2} for {t} is {adv} {a}.",
    "Our {a} {n} has {k} parts and {k2} of them are {a2}.",
    "If the {n} fails, the {n2} should {adv} {v} itself.",
    "Nobody has {adv} checked whether the {n} matches the {n2}.",
    "{C} the {n} about {t} took {k} days to {v}.",
    "The {a} version of the {n} is {adv} better than the {a2} one.",
)

HARVEST_TEMPLATES = (
    "Write a detailed explanation of {t} (part {i}).",
    "Write a comprehensive, step-by-step tutorial on {t}. Include worked examples. Section {i}.",
    "Produce a long-form textbook chapter about {t}, chapter {i}, with exercises and solutions.",
    "Explain {t} in depth for an expert audience. Cover history, theory and practice. Variant {i}.",
    "Generate {k} diverse question-and-answer pairs about {t}, with long answers. Batch {i}.",
    "Write an exhaustive reference article on {t}. Use headings and examples. Draft #{i}.",
    "Give a thorough, university-level lecture on {t} with derivations. Lecture {i}.",
    "Describe {t} in great detail, then list common misconceptions and correct each one. #{i}",
)

CODE_LANGS = ("python", "typescript", "go", "java", "rust")

CODE_INSTRUCTIONS = (
    "Complete the next line of code.",
    "Suggest a completion for the function at the cursor.",
    "Fix the bug in the highlighted function. Answer with the corrected line only.",
    "Write a one-line docstring for the function above.",
    "Name the variable at the cursor.",
    "Is there an off-by-one error here? Answer yes or no with one reason.",
    "Continue the code.",
    "Return only the missing import statement.",
)


def _fill(rng: random.Random, form: str, topic: str | None = None) -> str:
    a, a2 = rng.sample(ADJECTIVES, 2)
    n, n2 = rng.sample(NOUNS, 2)
    v = rng.choice(VERBS)
    return form.format(
        a=a, a2=a2, n=n, n2=n2, v=v, V=v.capitalize(), adv=rng.choice(ADVERBS),
        C=rng.choice(CONNECTORS), t=topic or rng.choice(TOPICS),
        k=rng.randint(2, 12), k2=rng.randint(1, 5),
    )


def sentence(rng: random.Random, topic: str | None = None) -> str:
    return _fill(rng, rng.choice(SENTENCE_FORMS), topic)


def prose(rng: random.Random, n_words: int, topic: str | None = None) -> str:
    """About n_words words of paragraph-structured prose."""
    out: list[str] = []
    para: list[str] = []
    count = 0
    para_len = rng.randint(3, 8)
    while count < n_words:
        s = sentence(rng, topic if rng.random() < 0.3 else None)
        para.append(s)
        count += len(s.split())
        if len(para) >= para_len:
            out.append(" ".join(para))
            para = []
            para_len = rng.randint(3, 8)
    if para:
        out.append(" ".join(para))
    words = "\n\n".join(out).split(" ")
    # trim to about n_words whitespace-separated words, keeping paragraph breaks
    return " ".join(words[: max(1, n_words)]) if len(words) > n_words else " ".join(words)


def word_count(s: str) -> int:
    return len(s.split())


def human_message(rng: random.Random, n_words: int, topic: str, turn: int) -> str:
    """A user chat message of about n_words words."""
    if turn == 0:
        head = _fill(rng, rng.choice(OPENERS), topic)
    else:
        head = _fill(rng, rng.choice(FOLLOW_UPS), topic)
    need = n_words - word_count(head)
    if need <= 3:
        return head
    intro = rng.choice(("Here it is:", "Text:", "For reference:", "This is what I have so far:",
                        "Context:", "Pasting it below.", ""))
    body = prose(rng, need - word_count(intro), topic)
    return f"{head} {intro}\n\n{body}".replace(" \n", "\n") if intro else f"{head}\n\n{body}"


def system_prompt(rng: random.Random) -> str:
    return rng.choice((
        "You are a helpful assistant.",
        "You are a helpful assistant. Answer concisely.",
        "You are an expert writing assistant. Keep a friendly tone.",
        "You are ChatBot, a large language model. Be accurate and cite assumptions.",
    ))


def _ident(rng: random.Random) -> str:
    parts = rng.sample(NOUNS + ADJECTIVES + VERBS, rng.randint(1, 3))
    parts = [p.replace("-", "_") for p in parts]
    style = rng.random()
    if style < 0.5:
        return "_".join(parts)
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def _code_line(rng: random.Random, lang: str, indent: int) -> str:
    pad = "    " * indent
    x, y, z = _ident(rng), _ident(rng), _ident(rng)
    k = rng.randint(0, 4096)
    forms = {
        "python": (f"{x} = {y}({z}, {k})", f"if {x} is None:", f"return {y}[{k % 16}]",
                   f"for {x} in {y}.{z}():", f"{x}.{y}({z}=True)", f"# {sentence(rng)}",
                   f"self.{x} = {{'{y}': {k}, '{z}': None}}", f"raise ValueError('{x} {y}')"),
        "typescript": (f"const {x} = await {y}({z}, {k});", f"if (!{x}) {{", f"return {y}[{k % 16}];",
                       f"for (const {x} of {y}.{z}()) {{", f"// {sentence(rng)}",
                       f"export function {x}({y}: number): string {{", f"{x}.{y}({{ {z}: true }});", "}"),
        "go": (f"{x} := {y}({z}, {k})", f"if err != nil {{", f"return {y}[{k % 16}], nil",
               f"for _, {x} := range {y} {{", f"// {sentence(rng)}", f"func {x}({y} int) error {{",
               f"{x}.{y}({z})", "}"),
        "java": (f"int {x} = {y}.{z}({k});", f"if ({x} == null) {{", f"return {y}.get({k % 16});",
                 f"for (var {x} : {y}) {{", f"// {sentence(rng)}", f"public void {x}(String {y}) {{",
                 f"this.{x} = new {y.capitalize()}();", "}"),
        "rust": (f"let {x} = {y}(&{z}, {k});", f"if {x}.is_none() {{", f"return Ok({y}[{k % 16}]);",
                 f"for {x} in {y}.iter() {{", f"// {sentence(rng)}", f"fn {x}({y}: usize) -> Result<(), Error> {{",
                 f"{x}.{y}({z})?;", "}"),
    }
    return pad + rng.choice(forms[lang])


def code_context(rng: random.Random, n_words: int) -> tuple[str, str]:
    """(language, about n_words words of code-like text with a file header)."""
    lang = rng.choice(CODE_LANGS)
    ext = {"python": "py", "typescript": "ts", "go": "go", "java": "java", "rust": "rs"}[lang]
    lines = [f"// file: src/{_ident(rng)}/{_ident(rng)}.{ext}"]
    count = 2
    indent = 0
    while count < n_words:
        line = _code_line(rng, lang, indent)
        lines.append(line)
        count += len(line.split())
        if line.rstrip().endswith(("{", ":")):
            indent = min(indent + 1, 4)
        elif rng.random() < 0.25 and indent > 0:
            indent -= 1
    return lang, "\n".join(lines)


def app_prompt(rng: random.Random, n_words: int) -> tuple[str, str]:
    """(instruction, code context) for an automated code-assistant request."""
    instr = rng.choice(CODE_INSTRUCTIONS)
    lang, ctx = code_context(rng, max(5, n_words - word_count(instr)))
    return instr, f"```{lang}\n{ctx}\n<CURSOR>\n```"


def harvest_prompt(rng: random.Random, i: int) -> str:
    t = rng.choice(TOPICS)
    if rng.random() < 0.5:
        t = f"{rng.choice(ADJECTIVES)} aspects of {t}"
    p = rng.choice(HARVEST_TEMPLATES).format(t=t, i=i, k=rng.randint(5, 30))
    if rng.random() < 0.3:
        p += " " + rng.choice(("Be as long and complete as possible.", "Do not summarise.",
                               "Use at least 1500 words.", "Respond in English.",
                               "Format the answer as Markdown."))
    return p
