def convert_torchvision_resnet(*a, **k): raise NotImplementedError
