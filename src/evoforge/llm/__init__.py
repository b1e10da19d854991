"""The LLM side of the search: how evoforge asks a language model for kernels (the ``llm`` extra).

- ``client``: ``LLMClient`` over any OpenAI-compatible endpoint, with retries, several weighted models and a
  token/money ``Budget``; ``replay`` is a scripted OpenAI-compatible server on 127.0.0.1 (tests, dry runs).
- ``prompts``: the Jinja2 templates (``llm/templates/*.j2``: system, generate, mutate, crossover, repair),
  overridable with ``--prompts``.
- ``guide``: what information guides the next candidate (EvoEngineer's free / insight / full: the task
  context, insights distilled from evaluated candidates, earlier high-fitness solutions).
- ``extract``: the candidate's code read out of a reply.

``mutators.llm.LLMMutator`` ties them together as a mutator; ``evolve`` builds it for ``--mutator llm`` or
``mixed``. This package sits below the mutators and above tasks and the result types; nothing here is
imported unless an LLM mutator is asked for.
"""
