"""ELF-VC model (Rippel et al., "ELF-VC: Efficient Learned Flexible-Rate Video Coding").

Import the submodules (model.config, model.elfvc, ...): the package itself imports nothing, so the
TF-free ones (model.config, model.sampling) load where TensorFlow is absent (gpu_train/).
"""
