#include "greet.h"
