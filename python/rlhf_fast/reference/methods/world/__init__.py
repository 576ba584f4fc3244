"""Twin of rust/methods/world/: a world's own computations (:mod:`rlhf_fast.worlds`).

Its tables from its draws and an AI judge's token values (:mod:`.tables`), the labels of a
human labeller and of a judge (:mod:`.labels`), the score of a bag of tokens (:mod:`.scores`),
one SGD step of the proxy reward model (:mod:`.reward_model`) and Gao et al.'s fit
(:mod:`.gao`). The draws stay NumPy's PCG64 (every world so far depends on them): here they
are inputs, as lists. Tables are lists of rows. The exact expectations under a policy, the
frontier and the reward model's passes over the pairs are :mod:`..engines.world`'s.
"""
