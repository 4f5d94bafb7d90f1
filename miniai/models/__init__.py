"""Models and their building blocks: `layers` (convolutions, activations, init, dropout; notebook 04_layers) and
`resnet` (residual blocks, the Fashion-MNIST classifier and its weights; notebook 04_resnet).
Written by hand (not generated): it only re-exports names, so `import miniai.models` stays light."""

from .layers import GeneralRelu, conv, init_weights, Dropout, Dropout2d, is_dropout
from .resnet import (ResBlock, PreActResBlock, fashion_classifier, classifier_features, save_weights, load_weights,
                     load_fashion_classifier, fashion_classifier_path, TestTimeDropoutCB, AugmentCB)

__all__ = ['GeneralRelu', 'conv', 'init_weights', 'Dropout', 'Dropout2d', 'is_dropout',
           'ResBlock', 'PreActResBlock', 'fashion_classifier', 'classifier_features', 'save_weights', 'load_weights',
           'load_fashion_classifier', 'fashion_classifier_path', 'TestTimeDropoutCB', 'AugmentCB']
