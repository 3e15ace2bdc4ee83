"""The adaptive global batch (issue 31): between log windows, pick the global batch that makes the most training
progress per second, as Pollux/AdaptDL does. Progress per step comes from the gradient noise scale through the
AdaScale gain (bigbatch.optim.adascale), time per step from a model fitted to the step times the run has seen at
each batch (goodput.py); choice.py compares candidate batches and switches only for a clear predicted gain. This
package is the arithmetic; the training loop decides when to ask and applies the answer."""
